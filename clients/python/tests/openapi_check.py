"""Validates the node's real answers against the API's OpenAPI 3.1 description (docs/openapi.json).

Every answer an httpx client receives in these tests goes through `Checker.check`: its path and
method name an operation, its status one of that operation's answers (or `default`, the error
shape), and its JSON body must validate against that answer's schema. The description is made
strict here: an object schema that is not a part of another's `allOf` refuses properties it
does not name, and a composed one refuses properties none of its parts names, so an answer
with a field the description lacks fails as surely as one missing a required field.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_PATH = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"
DOC_URI = "urn:feral:openapi"
REF_PREFIX = "#/components/schemas/"


def _strict(doc: Dict[str, Any]) -> Dict[str, Any]:
    doc = copy.deepcopy(doc)
    schemas: Dict[str, Any] = doc["components"]["schemas"]
    parts: Set[str] = set()
    for schema in schemas.values():
        for part in schema.get("allOf", []):
            ref = part.get("$ref", "")
            if ref.startswith(REF_PREFIX):
                parts.add(ref[len(REF_PREFIX):])
    for name, schema in schemas.items():
        if name in parts:
            continue
        if "allOf" in schema:
            schema.setdefault("unevaluatedProperties", False)
        elif "properties" in schema:
            schema.setdefault("additionalProperties", False)
    return doc


class Checker:
    """The description's operations, and the answers checked against them."""

    def __init__(self, doc: Dict[str, Any]) -> None:
        self.doc = _strict(doc)
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(DOC_URI, resource)
        self.routes: List[Tuple[re.Pattern[str], str]] = []
        for template in self.doc["paths"]:
            pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            self.routes.append((re.compile(pattern), template))
        # Templates with fewer parameters first: `/v1/tables/{t}/rows` before `{t}/rows/{r}`.
        self.routes.sort(key=lambda r: r[1].count("{"))
        self.checked: Dict[str, int] = {}

    @classmethod
    def load(cls) -> "Checker":
        return cls(json.loads(DOC_PATH.read_text()))

    def _template(self, path: str) -> Optional[str]:
        for pattern, template in self.routes:
            if pattern.match(path):
                return template
        return None

    def _validate(self, schema: Any, body: Any, what: str) -> None:
        validator = Draft202012Validator(_absolute(schema), registry=self.registry)
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
        if errors:
            shown = "; ".join(
                f"at {'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in errors[:5]
            )
            raise AssertionError(f"{what}: the answer does not match docs/openapi.json: {shown}")

    def check(self, method: str, path: str, status: int, content_type: str, body: bytes) -> None:
        template = self._template(path)
        what = f"{method} {path} -> {status}"
        if template is None:
            # An unknown path must answer the error shape (404 not_found).
            assert status == 404, f"{what}: a path the description lacks answered {status}"
            self._validate({"$ref": REF_PREFIX + "ErrorBody"}, json.loads(body), what)
            return
        item = self.doc["paths"][template]
        operation = item.get(method.lower())
        if operation is None:
            assert status == 405, f"{what}: a method the description lacks answered {status}"
            return
        responses = operation["responses"]
        key = str(status) if str(status) in responses else "default"
        assert key in responses, f"{what}: status {status} is not described"
        if key == "default":
            assert status >= 400, f"{what}: a success answer the description does not list"
        content = responses[key].get("content", {})
        media = content_type.split(";")[0].strip()
        assert media in content, f"{what}: content type {media!r} is not described ({list(content)})"
        schema = content[media].get("schema", {})
        if media == "application/json":
            self._validate(schema, json.loads(body), what)
        elif media == "application/x-ndjson":
            for line in body.decode().splitlines():
                if line.strip():
                    self._validate(schema, json.loads(line), what)
        elif media == "text/event-stream":
            return  # read by the client as it streams; each event's data is a ChangeView
        self.checked[f"{method.upper()} {template}"] = self.checked.get(f"{method.upper()} {template}", 0) + 1


def _absolute(schema: Any) -> Any:
    """The schema with its local references made references into the description."""
    if isinstance(schema, dict):
        return {
            k: (DOC_URI + v if k == "$ref" and isinstance(v, str) and v.startswith("#/") else _absolute(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_absolute(v) for v in schema]
    return schema
