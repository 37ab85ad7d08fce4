"""`Memory` (blocking) and `AsyncMemory` (asyncio): the node's HTTP API (docs/api.md) on httpx.

Both build every request with the same `_Call` and read every answer with the same `_answer`,
so the two differ only in how they send. Every write carries an op_id made here, which makes
it idempotent on the node: a write whose connection dropped is sent again, at most `retries`
times, and is never applied twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import (
    Any,
    AsyncIterator,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
    cast,
)

import httpx

from .errors import ConnectionFailed, FeralError, error_for
from .types import (
    JSON,
    Appended,
    Change,
    CheckReport,
    Episode,
    HistoryOp,
    Row,
    SearchHit,
    Status,
    SyncResult,
)

DEFAULT_DATA_DIR = "~/.local/share/feral-memory"
"""Where `feral-node` keeps its store unless told otherwise (`FERAL_DATA_DIR`)."""
SOCKET_FILE = "api.sock"
TOKEN_FILE = "api.token"
RETRIES_DEFAULT = 3
"""How many times a request is sent again after a connection error."""
TIMEOUT_DEFAULT = 30.0
"""Seconds for connecting and for each read (a change-feed wait gets its wait on top)."""
RETRY_BACKOFF_S = 0.1
"""The first pause before a retry; it doubles at each one."""
PAGE_DEFAULT = 500
"""Episodes and rows asked for per page by the iterators."""

Params = Dict[str, Union[str, int, float]]


def new_op_id() -> str:
    """A fresh op_id (32 hex characters)."""
    return uuid.uuid4().hex


class _Call:
    """One request: method, path, query, JSON body, and whether a retry is safe."""

    def __init__(
        self,
        method: str,
        path: str,
        params: Optional[Params] = None,
        body: JSON = None,
        retry: bool = True,
        stream: bool = False,
        timeout: Optional[float] = None,
    ) -> None:
        self.method = method
        self.path = path
        self.params = {k: v for k, v in (params or {}).items() if v is not None}
        self.body = body
        self.retry = retry
        self.stream = stream
        self.timeout = timeout


def _answer(response: httpx.Response) -> JSON:
    """The JSON of a 2xx answer, or the `FeralError` its error body names. An answer that is
    not JSON (a proxy's page, a truncated body) is still a `FeralError`, never a JSONDecodeError."""
    text = response.text
    try:
        body: JSON = json.loads(text) if text else None
    except ValueError:
        body = None
        if response.is_success:
            raise FeralError(
                "invalid_answer", f"the node's answer is not JSON: {text[:200]!r}", response.status_code
            ) from None
    if response.is_success:
        return body
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return_error = error_for(response.status_code, body["error"], str(body.get("message", "")))
    else:
        return_error = error_for(response.status_code, f"http_{response.status_code}", text[:200])
    raise return_error


def _ndjson(text: str) -> Tuple[List[Change], Optional[str], bool]:
    """A change-feed page: its changes, `next_cursor` and `more`."""
    changes: List[Change] = []
    next_cursor: Optional[str] = None
    more = False
    for line in text.splitlines():
        if not line.strip():
            continue
        item = json.loads(line)
        if "next_cursor" in item and "lsn" not in item:
            next_cursor, more = item["next_cursor"], bool(item.get("more"))
        else:
            changes.append(cast(Change, item))
    return changes, next_cursor, more


def _endpoint(
    data_dir: Optional[Union[str, Path]], address: Optional[str], token: Optional[str]
) -> Tuple[str, Dict[str, str], Optional[str]]:
    """(base URL, headers, Unix socket path or None) for a data directory or a TCP address."""
    data = Path(os.path.expanduser(str(data_dir or os.environ.get("FERAL_DATA_DIR") or DEFAULT_DATA_DIR)))
    headers = {"Accept": "application/json"}
    if address is None:
        return "http://localhost", headers, str(data / SOCKET_FILE)
    if token is None:
        token = os.environ.get("FERAL_API_TOKEN")
    if token is None:
        try:
            token = (data / TOKEN_FILE).read_text().strip()
        except OSError as e:
            raise FeralError(
                "unauthorized", f"no token: FERAL_API_TOKEN is unset and {data / TOKEN_FILE}: {e}"
            ) from e
    headers["Authorization"] = f"Bearer {token}"
    host = address if "://" in address else f"http://{address}"
    return host, headers, None


def _episode_call(episodes: Union[Mapping[str, JSON], Sequence[Mapping[str, JSON]]]) -> Tuple[_Call, int]:
    """POST /v1/episodes with an op_id on every episode that has none."""
    many = not isinstance(episodes, Mapping)
    items = list(cast(Sequence[Mapping[str, JSON]], episodes)) if many else [cast(Mapping[str, JSON], episodes)]
    body = [dict(e) if "op_id" in e else {**e, "op_id": new_op_id()} for e in items]
    return _Call("POST", "/v1/episodes", body=body if many else body[0]), len(body)


def _list_params(
    limit: int,
    session: Optional[str],
    event_type: Optional[str],
    since: Optional[float],
    until: Optional[float],
    min_importance: Optional[float],
    cursor: Optional[str],
) -> Params:
    params: Dict[str, Any] = {
        "limit": limit,
        "session": session,
        "event_type": event_type,
        "since": since,
        "until": until,
        "min_importance": min_importance,
        "cursor": cursor,
    }
    return params


def _search_params(query: str, filters: Mapping[str, Any], limit: int, cursor: Optional[str]) -> Params:
    allowed = {
        "session",
        "event_type",
        "participant",
        "since",
        "until",
        "min_importance",
        "boost_importance",
        "boost_recency",
        "half_life_days",
    }
    unknown = set(filters) - allowed
    if unknown:
        raise TypeError(f"search() got unknown filters {sorted(unknown)}; known: {sorted(allowed)}")
    params: Dict[str, Any] = {"q": query, "limit": limit, "cursor": cursor, **filters}
    return params


def _seg(value: str) -> str:
    """One path segment, percent-encoded."""
    return urllib.parse.quote(value, safe="")


class _Base:
    def __init__(self, retries: int) -> None:
        if retries < 0:
            raise ValueError("retries must be at least 0")
        self.retries = retries


class Memory(_Base):
    """A blocking client of one node.

    `Memory()` talks to the node whose data directory is `FERAL_DATA_DIR` (default
    `~/.local/share/feral-memory`) over its Unix socket, which needs no token.
    `Memory(address="127.0.0.1:7412")` goes over TCP with `token`, else `FERAL_API_TOKEN`,
    else the data directory's `api.token`.
    """

    def __init__(
        self,
        data_dir: Optional[Union[str, Path]] = None,
        *,
        address: Optional[str] = None,
        token: Optional[str] = None,
        retries: int = RETRIES_DEFAULT,
        timeout: float = TIMEOUT_DEFAULT,
    ) -> None:
        super().__init__(retries)
        base, headers, uds = _endpoint(data_dir, address, token)
        transport = httpx.HTTPTransport(uds=uds) if uds else httpx.HTTPTransport()
        self._http = httpx.Client(base_url=base, headers=headers, transport=transport, timeout=timeout)

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def _send(self, call: _Call) -> httpx.Response:
        delay = RETRY_BACKOFF_S
        attempts = self.retries + 1 if call.retry else 1
        for attempt in range(attempts):
            try:
                kwargs: Dict[str, Any] = {"params": call.params}
                if call.body is not None:
                    kwargs["json"] = call.body
                if call.timeout is not None:
                    kwargs["timeout"] = call.timeout
                return self._http.request(call.method, call.path, **kwargs)
            except httpx.TransportError as e:
                if attempt + 1 == attempts:
                    raise ConnectionFailed("connection_failed", f"{call.method} {call.path}: {e!r}") from e
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    def _json(self, call: _Call) -> JSON:
        return _answer(self._send(call))

    # Episodes.

    def add(self, episode: Mapping[str, JSON]) -> Appended:
        """Appends one episode (durable when this returns); an op_id is added when absent."""
        call, _ = _episode_call(episode)
        return cast(Appended, self._json(call)["appended"][0])

    def add_many(self, episodes: Sequence[Mapping[str, JSON]]) -> List[Appended]:
        """Appends episodes in one group commit, all or none."""
        call, _ = _episode_call(episodes)
        return cast(List[Appended], self._json(call)["appended"])

    def get(self, episode_id: str) -> Episode:
        """One live episode; `NotFound` when there is none."""
        return cast(Episode, self._json(_Call("GET", f"/v1/episodes/{_seg(episode_id)}")))

    def update(self, episode_id: str, fields: Mapping[str, JSON]) -> Appended:
        """Merges `fields` into the live episode (PATCH), as one idempotent op."""
        body = {**fields, "op_id": fields.get("op_id") or new_op_id()}
        answer = self._json(_Call("PATCH", f"/v1/episodes/{_seg(episode_id)}", body=body))
        return cast(Appended, _first(answer))

    def delete(self, episode_id: str, op_id: Optional[str] = None) -> Appended:
        """Deletes an episode (a tombstone), as one idempotent op."""
        params: Params = {"op_id": op_id or new_op_id()}
        answer = self._json(_Call("DELETE", f"/v1/episodes/{_seg(episode_id)}", params=params))
        return cast(Appended, _first(answer))

    def episodes_page(
        self,
        limit: int = 50,
        *,
        session: Optional[str] = None,
        event_type: Optional[str] = None,
        since: Optional[float] = None,
        until: Optional[float] = None,
        min_importance: Optional[float] = None,
        cursor: Optional[str] = None,
    ) -> Tuple[List[Episode], Optional[str]]:
        """One page of live episodes, newest first, and the cursor of the next (None at the end)."""
        params = _list_params(limit, session, event_type, since, until, min_importance, cursor)
        answer = self._json(_Call("GET", "/v1/episodes", params=params))
        return cast(List[Episode], answer["episodes"]), answer.get("next_cursor")

    def episodes(
        self,
        *,
        session: Optional[str] = None,
        event_type: Optional[str] = None,
        since: Optional[float] = None,
        until: Optional[float] = None,
        min_importance: Optional[float] = None,
        page: int = PAGE_DEFAULT,
    ) -> Iterator[Episode]:
        """Every live episode matching the filters, newest first, paged by cursor."""
        cursor: Optional[str] = None
        while True:
            rows, cursor = self.episodes_page(
                page,
                session=session,
                event_type=event_type,
                since=since,
                until=until,
                min_importance=min_importance,
                cursor=cursor,
            )
            yield from rows
            if cursor is None:
                return

    def search_page(
        self, query: str, limit: int = 10, cursor: Optional[str] = None, **filters: Any
    ) -> Tuple[List[SearchHit], Optional[str]]:
        """One page of hits, best first, and the next page's cursor."""
        answer = self._json(_Call("GET", "/v1/search", params=_search_params(query, filters, limit, cursor)))
        return cast(List[SearchHit], answer["hits"]), answer.get("next_cursor")

    def search(self, query: str, limit: int = 10, **filters: Any) -> List[SearchHit]:
        """The best `limit` hits for `query` with the API's filters and boosts as keywords
        (`session`, `event_type`, `participant`, `since`, `until`, `min_importance`,
        `boost_importance`, `boost_recency`, `half_life_days`)."""
        return self.search_page(query, limit, None, **filters)[0]

    def history(self, episode_id: str, limit: int = 100) -> List[HistoryOp]:
        """The ops that touched an episode, in this node's log order (the first page)."""
        answer = self._json(_Call("GET", f"/v1/episodes/{_seg(episode_id)}/history", params={"limit": limit}))
        return cast(List[HistoryOp], answer["ops"])

    # Other tables.

    def put(self, table: str, row_id: str, data: JSON, op_id: Optional[str] = None) -> Appended:
        """Writes a row of `table` (last writer wins), as one idempotent op."""
        body = {"table": table, "row_id": row_id, "data": data, "op_id": op_id or new_op_id()}
        return cast(Appended, _first(self._json(_Call("POST", "/v1/ops", body=body))))

    def get_row(self, table: str, row_id: str) -> Row:
        """One live row; `NotFound` when there is none."""
        return cast(Row, self._json(_Call("GET", f"/v1/tables/{_seg(table)}/rows/{_seg(row_id)}")))

    def delete_row(self, table: str, row_id: str, op_id: Optional[str] = None) -> Appended:
        """Deletes a row (a tombstone), as one idempotent op."""
        body = {"table": table, "row_id": row_id, "kind": "delete", "op_id": op_id or new_op_id()}
        return cast(Appended, _first(self._json(_Call("POST", "/v1/ops", body=body))))

    def rows(self, table: str, *, page: int = PAGE_DEFAULT) -> Iterator[Row]:
        """Every live row of `table`, in row id order, paged by cursor."""
        cursor: Optional[str] = None
        while True:
            params: Params = {"limit": page}
            if cursor:
                params["cursor"] = cursor
            answer = self._json(_Call("GET", f"/v1/tables/{_seg(table)}/rows", params=params))
            yield from cast(List[Row], answer["rows"])
            cursor = answer.get("next_cursor")
            if cursor is None:
                return

    def tables(self) -> Dict[str, int]:
        """Every table and its live rows."""
        answer = self._json(_Call("GET", "/v1/tables"))
        return {t["table"]: int(t["rows"]) for t in answer["tables"]}

    # The change feed.

    def changes(
        self,
        since: Optional[str] = None,
        *,
        tables: Optional[Iterable[str]] = None,
        follow: bool = True,
        wait: int = 30,
        limit: int = 100,
    ) -> Iterator[Change]:
        """Every op of the node's log from `since` (a change's `cursor`; None: the start,
        "now": only what comes next), each once. With `follow` it waits for more forever,
        resuming from the last cursor after a dropped connection or a restart of the node;
        without it, it ends at the end of the log."""
        cursor = since
        delay = RETRY_BACKOFF_S
        while True:
            params: Params = {"limit": limit}
            if cursor is not None:
                params["since"] = cursor
            if tables:
                params["table"] = ",".join(tables)
            if follow:
                params["wait"] = wait
            call = _Call("GET", "/v1/changes", params=params, retry=False, timeout=TIMEOUT_DEFAULT + wait)
            try:
                response = self._send(call)
            except ConnectionFailed:
                if not follow:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = RETRY_BACKOFF_S
            if not response.is_success:
                _answer(response)
            changes, next_cursor, more = _ndjson(response.text)
            yield from changes
            cursor = next_cursor if next_cursor is not None else cursor
            if not follow and not more:
                return

    # The node.

    def status(self) -> Status:
        """The node's status (pause, heads, peers, damage, counters)."""
        return cast(Status, self._json(_Call("GET", "/v1/status")))

    def check(self) -> CheckReport:
        """The integrity check of log, index, projection and search index."""
        return cast(CheckReport, self._json(_Call("GET", "/v1/check")))

    def resume(self) -> CheckReport:
        """Re-verifies after a fault and clears the pause when the check passes."""
        return cast(CheckReport, self._json(_Call("POST", "/v1/resume")))

    def sync(self, peer: Optional[str] = None) -> List[SyncResult]:
        """Syncs with `peer` ("host:port") now, or with every known peer."""
        body = {"peer": peer} if peer else None
        return cast(List[SyncResult], self._json(_Call("POST", "/v1/sync", body=body)))

    def peers(self) -> List[Dict[str, JSON]]:
        """The known peers and their sync state."""
        answer = self._json(_Call("GET", "/v1/peers"))
        return cast(List[Dict[str, JSON]], answer.get("peers", answer) if isinstance(answer, dict) else answer)

    def backup(self, to: Union[str, Path]) -> Dict[str, JSON]:
        """An online backup into the absent or empty directory `to` (an absolute path the node
        can write); returns its manifest. Not retried: a second attempt would find `to` taken."""
        body = {"to": str(Path(to).absolute())}
        return cast(Dict[str, JSON], self._json(_Call("POST", "/v1/backup", body=body, retry=False)))


def _first(answer: JSON) -> JSON:
    appended = answer["appended"] if isinstance(answer, dict) and "appended" in answer else answer
    return appended[0] if isinstance(appended, list) else appended


class AsyncMemory(_Base):
    """The asyncio client: the same methods as `Memory`, awaited; the iterators are async."""

    def __init__(
        self,
        data_dir: Optional[Union[str, Path]] = None,
        *,
        address: Optional[str] = None,
        token: Optional[str] = None,
        retries: int = RETRIES_DEFAULT,
        timeout: float = TIMEOUT_DEFAULT,
    ) -> None:
        super().__init__(retries)
        base, headers, uds = _endpoint(data_dir, address, token)
        transport = httpx.AsyncHTTPTransport(uds=uds) if uds else httpx.AsyncHTTPTransport()
        self._http = httpx.AsyncClient(base_url=base, headers=headers, transport=transport, timeout=timeout)

    async def __aenter__(self) -> "AsyncMemory":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def _send(self, call: _Call) -> httpx.Response:
        delay = RETRY_BACKOFF_S
        attempts = self.retries + 1 if call.retry else 1
        for attempt in range(attempts):
            try:
                kwargs: Dict[str, Any] = {"params": call.params}
                if call.body is not None:
                    kwargs["json"] = call.body
                if call.timeout is not None:
                    kwargs["timeout"] = call.timeout
                return await self._http.request(call.method, call.path, **kwargs)
            except httpx.TransportError as e:
                if attempt + 1 == attempts:
                    raise ConnectionFailed("connection_failed", f"{call.method} {call.path}: {e!r}") from e
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _json(self, call: _Call) -> JSON:
        return _answer(await self._send(call))

    async def add(self, episode: Mapping[str, JSON]) -> Appended:
        """Appends one episode; see `Memory.add`."""
        call, _ = _episode_call(episode)
        return cast(Appended, (await self._json(call))["appended"][0])

    async def add_many(self, episodes: Sequence[Mapping[str, JSON]]) -> List[Appended]:
        """Appends episodes in one group commit; see `Memory.add_many`."""
        call, _ = _episode_call(episodes)
        return cast(List[Appended], (await self._json(call))["appended"])

    async def get(self, episode_id: str) -> Episode:
        """One live episode; see `Memory.get`."""
        return cast(Episode, await self._json(_Call("GET", f"/v1/episodes/{_seg(episode_id)}")))

    async def update(self, episode_id: str, fields: Mapping[str, JSON]) -> Appended:
        """Merges fields into an episode; see `Memory.update`."""
        body = {**fields, "op_id": fields.get("op_id") or new_op_id()}
        answer = await self._json(_Call("PATCH", f"/v1/episodes/{_seg(episode_id)}", body=body))
        return cast(Appended, _first(answer))

    async def delete(self, episode_id: str, op_id: Optional[str] = None) -> Appended:
        """Deletes an episode; see `Memory.delete`."""
        params: Params = {"op_id": op_id or new_op_id()}
        answer = await self._json(_Call("DELETE", f"/v1/episodes/{_seg(episode_id)}", params=params))
        return cast(Appended, _first(answer))

    async def episodes(
        self,
        *,
        session: Optional[str] = None,
        event_type: Optional[str] = None,
        since: Optional[float] = None,
        until: Optional[float] = None,
        min_importance: Optional[float] = None,
        page: int = PAGE_DEFAULT,
    ) -> AsyncIterator[Episode]:
        """Every live episode matching the filters; see `Memory.episodes`."""
        cursor: Optional[str] = None
        while True:
            params = _list_params(page, session, event_type, since, until, min_importance, cursor)
            answer = await self._json(_Call("GET", "/v1/episodes", params=params))
            for row in cast(List[Episode], answer["episodes"]):
                yield row
            cursor = answer.get("next_cursor")
            if cursor is None:
                return

    async def search(self, query: str, limit: int = 10, **filters: Any) -> List[SearchHit]:
        """The best hits; see `Memory.search`."""
        answer = await self._json(_Call("GET", "/v1/search", params=_search_params(query, filters, limit, None)))
        return cast(List[SearchHit], answer["hits"])

    async def put(self, table: str, row_id: str, data: JSON, op_id: Optional[str] = None) -> Appended:
        """Writes a row; see `Memory.put`."""
        body = {"table": table, "row_id": row_id, "data": data, "op_id": op_id or new_op_id()}
        return cast(Appended, _first(await self._json(_Call("POST", "/v1/ops", body=body))))

    async def get_row(self, table: str, row_id: str) -> Row:
        """One live row; see `Memory.get_row`."""
        return cast(Row, await self._json(_Call("GET", f"/v1/tables/{_seg(table)}/rows/{_seg(row_id)}")))

    async def changes(
        self,
        since: Optional[str] = None,
        *,
        tables: Optional[Iterable[str]] = None,
        follow: bool = True,
        wait: int = 30,
        limit: int = 100,
    ) -> AsyncIterator[Change]:
        """The change feed; see `Memory.changes`."""
        cursor = since
        delay = RETRY_BACKOFF_S
        while True:
            params: Params = {"limit": limit}
            if cursor is not None:
                params["since"] = cursor
            if tables:
                params["table"] = ",".join(tables)
            if follow:
                params["wait"] = wait
            call = _Call("GET", "/v1/changes", params=params, retry=False, timeout=TIMEOUT_DEFAULT + wait)
            try:
                response = await self._send(call)
            except ConnectionFailed:
                if not follow:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = RETRY_BACKOFF_S
            if not response.is_success:
                _answer(response)
            changes, next_cursor, more = _ndjson(response.text)
            for change in changes:
                yield change
            cursor = next_cursor if next_cursor is not None else cursor
            if not follow and not more:
                return

    async def status(self) -> Status:
        """The node's status; see `Memory.status`."""
        return cast(Status, await self._json(_Call("GET", "/v1/status")))

    async def check(self) -> CheckReport:
        """The integrity check; see `Memory.check`."""
        return cast(CheckReport, await self._json(_Call("GET", "/v1/check")))

    async def sync(self, peer: Optional[str] = None) -> List[SyncResult]:
        """Syncs now; see `Memory.sync`."""
        body = {"peer": peer} if peer else None
        return cast(List[SyncResult], await self._json(_Call("POST", "/v1/sync", body=body)))
