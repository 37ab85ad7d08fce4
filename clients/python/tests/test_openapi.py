"""Every operation of docs/openapi.json called on a real node, each answer validated against
its description by the conftest hook (`openapi_check.Checker`), and the description the node
serves is the checked-in one."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

import feral_memory as fm
from conftest import CHECKER, Node
from openapi_check import DOC_PATH


def test_every_operation_answers_as_described(node: Node, workdir: Path) -> None:
    before = dict(CHECKER.checked)
    described = {f"{m.upper()} {p}" for p, item in CHECKER.doc["paths"].items() for m in item}
    transport = httpx.HTTPTransport(uds=str(node.data / "api.sock"))
    with httpx.Client(base_url="http://localhost", transport=transport, timeout=30) as http, fm.Memory(node.data) as m:
        m.add({"id": "e1", "session_id": "s", "event_type": "chat", "summary": "likes green tea"})
        m.update("e1", {"importance": 0.9})
        m.put("notes", "n1", {"text": "buy milk"})
        for method, path, body in [
            ("GET", "/v1/health", None),
            ("GET", "/v1/openapi.json", None),
            ("GET", "/metrics", None),
            ("GET", "/v1/episodes?limit=5", None),
            ("GET", "/v1/episodes/e1", None),
            ("GET", "/v1/episodes/e1/history", None),
            ("GET", "/v1/counts?session=s", None),
            ("GET", "/v1/search?q=tea", None),
            ("GET", "/v1/tables", None),
            ("GET", "/v1/tables/notes/rows", None),
            ("GET", "/v1/tables/notes/rows/n1", None),
            ("GET", "/v1/tables/notes/rows/n1/history", None),
            ("GET", "/v1/changes?limit=10", None),
            ("GET", "/v1/export", None),
            ("GET", "/v1/export?ops=true", None),
            ("GET", "/v1/status", None),
            ("GET", "/v1/check", None),
            ("GET", "/v1/peers", None),
            ("POST", "/v1/resume", None),
            ("POST", "/v1/sync", None),
            ("POST", "/v1/rebuild", None),
            ("POST", "/v1/certs/reload", None),
            ("POST", "/v1/backup", {"to": str(workdir / "backup")}),
            ("POST", "/v1/conflicts/" + "0" * 32 + "/resolve", None),
            ("POST", "/v1/revocations", {"node_id": "0" * 32}),
            ("DELETE", "/v1/episodes/e1", None),
        ]:
            kw = {} if body is None else {"json": body}
            answer = http.request(method, path, **kw)
            assert answer.status_code < 500, (method, path, answer.text)
        served = http.get("/v1/openapi.json").json()
    assert served == json.loads(DOC_PATH.read_text()), "the node serves another description"
    validated = {op for op, n in CHECKER.checked.items() if n > before.get(op, 0)}
    assert validated == described, f"not validated: {sorted(described - validated)}"
