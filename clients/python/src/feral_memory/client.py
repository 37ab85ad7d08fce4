"""`Memory` (blocking) and `AsyncMemory` (asyncio): the node's HTTP API (docs/api.md) on httpx.

Every method is one `_Req` made by the functions of `_Requests` (the request and how its answer
is read), and every iterator is one `_Pager` or `_Feed` (which request comes next and what an
answer yields), so the two clients differ only in how they send and sleep. Every write carries
an op_id made here, which makes it idempotent on the node: a write whose connection dropped is
sent again, at most `retries` times (`_Backoff`), and is never applied twice.
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
    Callable,
    Dict,
    Generic,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
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

    def kwargs(self) -> Dict[str, Any]:
        """The keyword arguments of `httpx.Client.request` for this call."""
        kwargs: Dict[str, Any] = {"params": self.params}
        if self.body is not None:
            kwargs["json"] = self.body
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        return kwargs


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


T = TypeVar("T")

FEED_BACKOFF_MAX_S = 5.0
"""The longest pause of a following change feed between reconnection attempts."""


class _Req(Generic[T]):
    """One request and how its JSON answer becomes the method's result."""

    def __init__(self, call: _Call, read: Callable[[Any], T]) -> None:
        self.call = call
        self.read = read


class _Backoff:
    """The retries of one call: `failed` returns the pause before the next attempt, or raises
    `ConnectionFailed` (with the transport error as its cause) when none is left."""

    def __init__(self, call: _Call, retries: int) -> None:
        self.call = call
        self.left = retries if call.retry else 0
        self.delay = RETRY_BACKOFF_S

    def failed(self, error: httpx.TransportError) -> float:
        if self.left == 0:
            raise ConnectionFailed(
                "connection_failed", f"{self.call.method} {self.call.path}: {error!r}"
            ) from error
        self.left -= 1
        delay, self.delay = self.delay, self.delay * 2
        return delay


class _Pager(Generic[T]):
    """A cursor-paged listing: `call` is the next page's request, `take` reads an answer into
    its items and moves the cursor; `done` once a page came without a next cursor."""

    def __init__(self, path: str, params: Params, key: str) -> None:
        self.path, self.params, self.key = path, params, key
        self.cursor: Optional[str] = None
        self.done = False

    def call(self) -> _Call:
        params = dict(self.params)
        if self.cursor is not None:
            params["cursor"] = self.cursor
        return _Call("GET", self.path, params=params)

    def take(self, answer: Any) -> List[T]:
        self.cursor = answer.get("next_cursor")
        self.done = self.cursor is None
        return cast(List[T], answer[self.key])


class _Feed:
    """The change feed's state: the cursor it resumes from, the reconnection pause, and when a
    feed that does not follow is done."""

    def __init__(
        self, since: Optional[str], tables: Optional[Iterable[str]], follow: bool, wait: int, limit: int
    ) -> None:
        self.cursor = since
        self.tables = ",".join(tables) if tables else None
        self.follow, self.wait, self.limit = follow, wait, limit
        self.delay = RETRY_BACKOFF_S
        self.done = False

    def call(self) -> _Call:
        params: Params = {"limit": self.limit}
        if self.cursor is not None:
            params["since"] = self.cursor
        if self.tables:
            params["table"] = self.tables
        if self.follow:
            params["wait"] = self.wait
        return _Call("GET", "/v1/changes", params=params, retry=False, timeout=TIMEOUT_DEFAULT + self.wait)

    def failed(self, error: ConnectionFailed) -> float:
        """The pause before reconnecting; a feed that does not follow raises instead."""
        if not self.follow:
            raise error
        delay, self.delay = self.delay, min(self.delay * 2, FEED_BACKOFF_MAX_S)
        return delay

    def take(self, response: httpx.Response) -> List[Change]:
        self.delay = RETRY_BACKOFF_S
        if not response.is_success:
            _answer(response)
        changes, next_cursor, more = _ndjson(response.text)
        self.cursor = next_cursor if next_cursor is not None else self.cursor
        self.done = not self.follow and not more
        return changes


def _first(answer: JSON) -> JSON:
    appended = answer["appended"] if isinstance(answer, dict) and "appended" in answer else answer
    return appended[0] if isinstance(appended, list) else appended


class _Requests:
    """Every method's request and answer, shared by both clients."""

    @staticmethod
    def add(episode: Mapping[str, JSON]) -> _Req[Appended]:
        call, _ = _episode_call(episode)
        return _Req(call, lambda a: cast(Appended, a["appended"][0]))

    @staticmethod
    def add_many(episodes: Sequence[Mapping[str, JSON]]) -> _Req[List[Appended]]:
        call, _ = _episode_call(episodes)
        return _Req(call, lambda a: cast(List[Appended], a["appended"]))

    @staticmethod
    def get(episode_id: str) -> _Req[Episode]:
        return _Req(_Call("GET", f"/v1/episodes/{_seg(episode_id)}"), lambda a: cast(Episode, a))

    @staticmethod
    def update(episode_id: str, fields: Mapping[str, JSON]) -> _Req[Appended]:
        body = {**fields, "op_id": fields.get("op_id") or new_op_id()}
        call = _Call("PATCH", f"/v1/episodes/{_seg(episode_id)}", body=body)
        return _Req(call, lambda a: cast(Appended, _first(a)))

    @staticmethod
    def delete(episode_id: str, op_id: Optional[str]) -> _Req[Appended]:
        params: Params = {"op_id": op_id or new_op_id()}
        call = _Call("DELETE", f"/v1/episodes/{_seg(episode_id)}", params=params)
        return _Req(call, lambda a: cast(Appended, _first(a)))

    @staticmethod
    def episodes_page(params: Params) -> _Req[Tuple[List[Episode], Optional[str]]]:
        call = _Call("GET", "/v1/episodes", params=params)
        return _Req(call, lambda a: (cast(List[Episode], a["episodes"]), a.get("next_cursor")))

    @staticmethod
    def search_page(
        query: str, limit: int, cursor: Optional[str], filters: Mapping[str, Any]
    ) -> _Req[Tuple[List[SearchHit], Optional[str]]]:
        call = _Call("GET", "/v1/search", params=_search_params(query, filters, limit, cursor))
        return _Req(call, lambda a: (cast(List[SearchHit], a["hits"]), a.get("next_cursor")))

    @staticmethod
    def history(episode_id: str, limit: int) -> _Req[List[HistoryOp]]:
        call = _Call("GET", f"/v1/episodes/{_seg(episode_id)}/history", params={"limit": limit})
        return _Req(call, lambda a: cast(List[HistoryOp], a["ops"]))

    @staticmethod
    def put(table: str, row_id: str, data: JSON, op_id: Optional[str]) -> _Req[Appended]:
        body = {"table": table, "row_id": row_id, "data": data, "op_id": op_id or new_op_id()}
        return _Req(_Call("POST", "/v1/ops", body=body), lambda a: cast(Appended, _first(a)))

    @staticmethod
    def get_row(table: str, row_id: str) -> _Req[Row]:
        return _Req(_Call("GET", f"/v1/tables/{_seg(table)}/rows/{_seg(row_id)}"), lambda a: cast(Row, a))

    @staticmethod
    def delete_row(table: str, row_id: str, op_id: Optional[str]) -> _Req[Appended]:
        body = {"table": table, "row_id": row_id, "kind": "delete", "op_id": op_id or new_op_id()}
        return _Req(_Call("POST", "/v1/ops", body=body), lambda a: cast(Appended, _first(a)))

    @staticmethod
    def rows(table: str, page: int) -> _Pager[Row]:
        return _Pager(f"/v1/tables/{_seg(table)}/rows", {"limit": page}, "rows")

    @staticmethod
    def tables() -> _Req[Dict[str, int]]:
        return _Req(_Call("GET", "/v1/tables"), lambda a: {t["table"]: int(t["rows"]) for t in a["tables"]})

    @staticmethod
    def status() -> _Req[Status]:
        return _Req(_Call("GET", "/v1/status"), lambda a: cast(Status, a))

    @staticmethod
    def check() -> _Req[CheckReport]:
        return _Req(_Call("GET", "/v1/check"), lambda a: cast(CheckReport, a))

    @staticmethod
    def resume() -> _Req[CheckReport]:
        return _Req(_Call("POST", "/v1/resume"), lambda a: cast(CheckReport, a))

    @staticmethod
    def sync(peer: Optional[str]) -> _Req[List[SyncResult]]:
        body = {"peer": peer} if peer else None
        return _Req(_Call("POST", "/v1/sync", body=body), lambda a: cast(List[SyncResult], a))

    @staticmethod
    def peers() -> _Req[List[Dict[str, JSON]]]:
        return _Req(
            _Call("GET", "/v1/peers"),
            lambda a: cast(List[Dict[str, JSON]], a.get("peers", a) if isinstance(a, dict) else a),
        )

    @staticmethod
    def backup(to: Union[str, Path]) -> _Req[Dict[str, JSON]]:
        body = {"to": str(Path(to).absolute())}
        return _Req(_Call("POST", "/v1/backup", body=body, retry=False), lambda a: cast(Dict[str, JSON], a))


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
        backoff = _Backoff(call, self.retries)
        while True:
            try:
                return self._http.request(call.method, call.path, **call.kwargs())
            except httpx.TransportError as e:
                time.sleep(backoff.failed(e))

    def _do(self, req: _Req[T]) -> T:
        return req.read(_answer(self._send(req.call)))

    def _pages(self, pager: _Pager[T]) -> Iterator[T]:
        while not pager.done:
            yield from pager.take(_answer(self._send(pager.call())))

    # Episodes.

    def add(self, episode: Mapping[str, JSON]) -> Appended:
        """Appends one episode (durable when this returns); an op_id is added when absent."""
        return self._do(_Requests.add(episode))

    def add_many(self, episodes: Sequence[Mapping[str, JSON]]) -> List[Appended]:
        """Appends episodes in one group commit, all or none."""
        return self._do(_Requests.add_many(episodes))

    def get(self, episode_id: str) -> Episode:
        """One live episode; `NotFound` when there is none."""
        return self._do(_Requests.get(episode_id))

    def update(self, episode_id: str, fields: Mapping[str, JSON]) -> Appended:
        """Merges `fields` into the live episode (PATCH), as one idempotent op."""
        return self._do(_Requests.update(episode_id, fields))

    def delete(self, episode_id: str, op_id: Optional[str] = None) -> Appended:
        """Deletes an episode (a tombstone), as one idempotent op."""
        return self._do(_Requests.delete(episode_id, op_id))

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
        return self._do(_Requests.episodes_page(params))

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
        params = _list_params(page, session, event_type, since, until, min_importance, None)
        return self._pages(_Pager("/v1/episodes", params, "episodes"))

    def search_page(
        self, query: str, limit: int = 10, cursor: Optional[str] = None, **filters: Any
    ) -> Tuple[List[SearchHit], Optional[str]]:
        """One page of hits, best first, and the next page's cursor."""
        return self._do(_Requests.search_page(query, limit, cursor, filters))

    def search(self, query: str, limit: int = 10, **filters: Any) -> List[SearchHit]:
        """The best `limit` hits for `query` with the API's filters and boosts as keywords
        (`session`, `event_type`, `participant`, `since`, `until`, `min_importance`,
        `boost_importance`, `boost_recency`, `half_life_days`)."""
        return self.search_page(query, limit, None, **filters)[0]

    def history(self, episode_id: str, limit: int = 100) -> List[HistoryOp]:
        """The ops that touched an episode, in this node's log order (the first page)."""
        return self._do(_Requests.history(episode_id, limit))

    # Other tables.

    def put(self, table: str, row_id: str, data: JSON, op_id: Optional[str] = None) -> Appended:
        """Writes a row of `table` (last writer wins), as one idempotent op."""
        return self._do(_Requests.put(table, row_id, data, op_id))

    def get_row(self, table: str, row_id: str) -> Row:
        """One live row; `NotFound` when there is none."""
        return self._do(_Requests.get_row(table, row_id))

    def delete_row(self, table: str, row_id: str, op_id: Optional[str] = None) -> Appended:
        """Deletes a row (a tombstone), as one idempotent op."""
        return self._do(_Requests.delete_row(table, row_id, op_id))

    def rows(self, table: str, *, page: int = PAGE_DEFAULT) -> Iterator[Row]:
        """Every live row of `table`, in row id order, paged by cursor."""
        return self._pages(_Requests.rows(table, page))

    def tables(self) -> Dict[str, int]:
        """Every table and its live rows."""
        return self._do(_Requests.tables())

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
        feed = _Feed(since, tables, follow, wait, limit)
        while not feed.done:
            try:
                response = self._send(feed.call())
            except ConnectionFailed as e:
                time.sleep(feed.failed(e))
                continue
            yield from feed.take(response)

    # The node.

    def status(self) -> Status:
        """The node's status (pause, heads, peers, damage, counters)."""
        return self._do(_Requests.status())

    def check(self) -> CheckReport:
        """The integrity check of log, index, projection and search index."""
        return self._do(_Requests.check())

    def resume(self) -> CheckReport:
        """Re-verifies after a fault and clears the pause when the check passes."""
        return self._do(_Requests.resume())

    def sync(self, peer: Optional[str] = None) -> List[SyncResult]:
        """Syncs with `peer` ("host:port") now, or with every known peer."""
        return self._do(_Requests.sync(peer))

    def peers(self) -> List[Dict[str, JSON]]:
        """The known peers and their sync state."""
        return self._do(_Requests.peers())

    def backup(self, to: Union[str, Path]) -> Dict[str, JSON]:
        """An online backup into the absent or empty directory `to` (an absolute path the node
        can write); returns its manifest. Not retried: a second attempt would find `to` taken."""
        return self._do(_Requests.backup(to))


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
        backoff = _Backoff(call, self.retries)
        while True:
            try:
                return await self._http.request(call.method, call.path, **call.kwargs())
            except httpx.TransportError as e:
                await asyncio.sleep(backoff.failed(e))

    async def _do(self, req: _Req[T]) -> T:
        return req.read(_answer(await self._send(req.call)))

    async def _pages(self, pager: _Pager[T]) -> AsyncIterator[T]:
        while not pager.done:
            for item in pager.take(_answer(await self._send(pager.call()))):
                yield item

    # Episodes.

    async def add(self, episode: Mapping[str, JSON]) -> Appended:
        """Appends one episode; see `Memory.add`."""
        return await self._do(_Requests.add(episode))

    async def add_many(self, episodes: Sequence[Mapping[str, JSON]]) -> List[Appended]:
        """Appends episodes in one group commit; see `Memory.add_many`."""
        return await self._do(_Requests.add_many(episodes))

    async def get(self, episode_id: str) -> Episode:
        """One live episode; see `Memory.get`."""
        return await self._do(_Requests.get(episode_id))

    async def update(self, episode_id: str, fields: Mapping[str, JSON]) -> Appended:
        """Merges fields into an episode; see `Memory.update`."""
        return await self._do(_Requests.update(episode_id, fields))

    async def delete(self, episode_id: str, op_id: Optional[str] = None) -> Appended:
        """Deletes an episode; see `Memory.delete`."""
        return await self._do(_Requests.delete(episode_id, op_id))

    async def episodes_page(
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
        """One page of live episodes; see `Memory.episodes_page`."""
        params = _list_params(limit, session, event_type, since, until, min_importance, cursor)
        return await self._do(_Requests.episodes_page(params))

    def episodes(
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
        params = _list_params(page, session, event_type, since, until, min_importance, None)
        return self._pages(_Pager("/v1/episodes", params, "episodes"))

    async def search_page(
        self, query: str, limit: int = 10, cursor: Optional[str] = None, **filters: Any
    ) -> Tuple[List[SearchHit], Optional[str]]:
        """One page of hits; see `Memory.search_page`."""
        return await self._do(_Requests.search_page(query, limit, cursor, filters))

    async def search(self, query: str, limit: int = 10, **filters: Any) -> List[SearchHit]:
        """The best hits; see `Memory.search`."""
        return (await self.search_page(query, limit, None, **filters))[0]

    async def history(self, episode_id: str, limit: int = 100) -> List[HistoryOp]:
        """The ops that touched an episode; see `Memory.history`."""
        return await self._do(_Requests.history(episode_id, limit))

    # Other tables.

    async def put(self, table: str, row_id: str, data: JSON, op_id: Optional[str] = None) -> Appended:
        """Writes a row; see `Memory.put`."""
        return await self._do(_Requests.put(table, row_id, data, op_id))

    async def get_row(self, table: str, row_id: str) -> Row:
        """One live row; see `Memory.get_row`."""
        return await self._do(_Requests.get_row(table, row_id))

    async def delete_row(self, table: str, row_id: str, op_id: Optional[str] = None) -> Appended:
        """Deletes a row; see `Memory.delete_row`."""
        return await self._do(_Requests.delete_row(table, row_id, op_id))

    def rows(self, table: str, *, page: int = PAGE_DEFAULT) -> AsyncIterator[Row]:
        """Every live row of `table`; see `Memory.rows`."""
        return self._pages(_Requests.rows(table, page))

    async def tables(self) -> Dict[str, int]:
        """Every table and its live rows; see `Memory.tables`."""
        return await self._do(_Requests.tables())

    # The change feed.

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
        feed = _Feed(since, tables, follow, wait, limit)
        while not feed.done:
            try:
                response = await self._send(feed.call())
            except ConnectionFailed as e:
                await asyncio.sleep(feed.failed(e))
                continue
            for change in feed.take(response):
                yield change

    # The node.

    async def status(self) -> Status:
        """The node's status; see `Memory.status`."""
        return await self._do(_Requests.status())

    async def check(self) -> CheckReport:
        """The integrity check; see `Memory.check`."""
        return await self._do(_Requests.check())

    async def resume(self) -> CheckReport:
        """Re-verifies and clears the pause; see `Memory.resume`."""
        return await self._do(_Requests.resume())

    async def sync(self, peer: Optional[str] = None) -> List[SyncResult]:
        """Syncs now; see `Memory.sync`."""
        return await self._do(_Requests.sync(peer))

    async def peers(self) -> List[Dict[str, JSON]]:
        """The known peers; see `Memory.peers`."""
        return await self._do(_Requests.peers())

    async def backup(self, to: Union[str, Path]) -> Dict[str, JSON]:
        """An online backup; see `Memory.backup`."""
        return await self._do(_Requests.backup(to))
