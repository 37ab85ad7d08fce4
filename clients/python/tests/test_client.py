"""The client against real `feral-node run` processes: every method, every error class,
paging, retries that never duplicate, the async client and the change feed across a restart."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

import feral_memory as fm
from conftest import Node


def ep(i: int, session: str = "s", **extra: Any) -> Dict[str, Any]:
    return {"id": f"e{i}", "session_id": session, "event_type": "chat", "summary": f"note {i}", **extra}


def tcp(node: Node, token: str = "") -> fm.Memory:
    return fm.Memory(node.data, address=node.api, token=token or None)


def test_episodes_add_get_update_delete_history(node: Node) -> None:
    with fm.Memory(node.data) as m:
        a = m.add(ep(1, summary="the user likes green tea", importance=0.8))
        assert len(a["op_id"]) == 32 and a["duplicate"] is False
        got = m.get("e1")
        assert got["summary"] == "the user likes green tea" and got["op_id"] == a["op_id"]
        m.update("e1", {"importance": 0.9})
        assert m.get("e1")["importance"] == 0.9
        assert [op["kind"] for op in m.history("e1")] == ["insert", "insert"]
        m.delete("e1")
        with pytest.raises(fm.NotFound) as e:
            m.get("e1")
        assert e.value.code == "not_found" and e.value.status == 404
        assert len(m.history("e1")) == 3


def test_paging_through_25000_episodes_sees_each_once(node: Node) -> None:
    with fm.Memory(node.data) as m:
        for start in range(0, 25_000, 5_000):
            m.add_many([ep(i, created_at=1_700_000_000 + i) for i in range(start, start + 5_000)])
        seen = [e["id"] for e in m.episodes(page=1_000)]
        assert len(seen) == 25_000 and len(set(seen)) == 25_000
        assert seen[0] == "e24999", "newest first"
        only = list(m.episodes(session="s", since=1_700_000_000 + 24_990))
        assert [e["id"] for e in only] == [f"e{i}" for i in range(24_999, 24_989, -1)]


def test_search_with_filters_and_scores(node: Node) -> None:
    with fm.Memory(node.data) as m:
        m.add_many([
            ep(1, "trip", summary="train to lyon at noon", importance=0.9),
            ep(2, "trip", summary="hotel in lyon"),
            ep(3, "home", summary="train schedule"),
        ])
        hits = m.search("train lyon", session="trip")
        assert [h["id"] for h in hits] == ["e1", "e2"]
        assert hits[0]["score"]["total"] > 0
        page, cursor = m.search_page("train", limit=1)
        assert len(page) == 1 and cursor is not None
        with pytest.raises(TypeError):
            m.search("train", sesion="trip")  # a misspelt filter is an error, never ignored


def test_other_tables(node: Node) -> None:
    with fm.Memory(node.data) as m:
        m.put("notes", "n1", {"text": "buy milk"})
        m.put("notes", "n2", "plain text")
        assert m.get_row("notes", "n1")["data"] == {"text": "buy milk"}
        assert [r["row_id"] for r in m.rows("notes", page=1)] == ["n1", "n2"]
        m.delete_row("notes", "n1")
        with pytest.raises(fm.NotFound):
            m.get_row("notes", "n1")
        assert m.tables()["notes"] == 1


def test_every_error_class(node: Node) -> None:
    with fm.Memory(node.data) as m:
        with pytest.raises(fm.InvalidEpisode) as bad:
            m.add(ep(1, summary=""))
        assert bad.value.field == "summary" and bad.value.code == "invalid_episode"
        op_id = fm.new_op_id()
        m.add({**ep(2), "op_id": op_id})
        with pytest.raises(fm.Conflict):
            m.add({**ep(3), "op_id": op_id})
        with pytest.raises(fm.InvalidRequest) as query:
            m.episodes_page(limit=10_001)
        assert query.value.code == "invalid_query"
        with pytest.raises(fm.InvalidRequest):
            m.put("_revocations", "x", {})
    with tcp(node, token="0" * 64) as wrong:
        with pytest.raises(fm.Unauthorized):
            wrong.status()
    with tcp(node) as right:
        assert right.status()["io_paused"] is False
    with fm.Memory(node.data / "nowhere", retries=1) as gone:
        with pytest.raises(fm.ConnectionFailed):
            gone.status()
    assert issubclass(fm.DiskFull, fm.Paused) and issubclass(fm.Paused, fm.FeralError)
    assert isinstance(fm.errors.error_for(500, "wal_corruption", "x"), fm.Corruption)
    assert isinstance(fm.errors.error_for(503, "busy", "x"), fm.Busy)
    assert isinstance(fm.errors.error_for(403, "bad_host", "x"), fm.Forbidden)
    assert isinstance(fm.errors.error_for(500, "internal", "x"), fm.ServerError)


class DropFirstAnswer:
    """A TCP relay to the node that forwards the first request whole and then closes that
    connection before any of the answer: the write happened, the client saw a dropped
    connection."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.server.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            client, _ = self.server.accept()
            self.connections += 1
            threading.Thread(target=self.relay, args=(client, self.connections == 1), daemon=True).start()

    def relay(self, client: socket.socket, drop: bool) -> None:
        upstream = socket.create_connection(self.target)
        if drop:
            request = client.recv(1 << 20)
            while b"\r\n\r\n" not in request:
                request += client.recv(1 << 20)
            head, _, body = request.partition(b"\r\n\r\n")
            length = next(int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length"))
            while len(body) < length:
                body += client.recv(1 << 20)
            upstream.sendall(head + b"\r\n\r\n" + body)
            upstream.recv(1 << 20)  # the node answered: the episode is durable
            client.close()
            upstream.close()
            return

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(1 << 16):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                b.close()

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)


def test_a_write_retried_after_a_dropped_connection_is_not_duplicated(node: Node) -> None:
    relay = DropFirstAnswer(node.api)
    with fm.Memory(node.data, address=relay.address) as m:
        appended = m.add(ep(7))
        assert relay.connections == 2, "the first answer was lost and the add was sent again"
        assert appended["duplicate"] is True, "the retry found the first attempt's op"
    with fm.Memory(node.data) as m:
        assert [e["id"] for e in m.episodes()] == ["e7"]
        assert len(m.history("e7")) == 1


def test_the_change_feed_resumes_after_the_node_restarts(node: Node) -> None:
    with fm.Memory(node.data) as m:
        m.add_many([ep(i) for i in range(3)])
        feed = m.changes(wait=2)
        first = [next(feed) for _ in range(3)]
        assert [c["row_id"] for c in first] == ["e0", "e1", "e2"]
        node.stop()
        node.start()
        with fm.Memory(node.data) as again:
            again.add_many([ep(3), ep(4)])
        rest = [next(feed) for _ in range(2)]
        assert [c["row_id"] for c in rest] == ["e3", "e4"], "each change once, none repeated"
        assert [c["row_id"] for c in m.changes(first[-1]["cursor"], follow=False)] == ["e3", "e4"]


def test_the_async_client(node: Node) -> None:
    async def go() -> None:
        async with fm.AsyncMemory(node.data) as m:
            await m.add_many([ep(i, summary=f"async note {i}") for i in range(30)])
            assert (await m.get("e3"))["summary"] == "async note 3"
            ids = [e["id"] async for e in m.episodes(page=7)]
            assert len(ids) == 30 and len(set(ids)) == 30
            assert len(await m.search("async", limit=5)) == 5
            await m.put("notes", "n1", [1, 2])
            assert (await m.get_row("notes", "n1"))["data"] == [1, 2]
            await m.update("e3", {"importance": 0.1})
            await m.delete("e4")
            changes = [c async for c in m.changes(follow=False)]
            assert len(changes) == 33
            assert (await m.check())["ok"] is True
            assert (await m.status())["io_paused"] is False
            with pytest.raises(fm.NotFound):
                await m.get("e4")
            # The rest of the surface, the same as the blocking client's.
            assert len(await m.history("e3")) == 2
            page, cursor = await m.episodes_page(5)
            assert len(page) == 5 and cursor is not None
            await m.put("notes", "n2", {"k": "v"})
            assert [r["row_id"] async for r in m.rows("notes", page=1)] == ["n1", "n2"]
            assert (await m.tables())["notes"] == 2
            await m.delete_row("notes", "n1")
            assert (await m.tables())["notes"] == 1
            assert isinstance(await m.peers(), list)
            assert (await m.resume())["ok"] is True
            manifest = await m.backup(node.data.parent / "async-backup")
            assert manifest

    asyncio.run(go())


def test_node_methods_and_sync_between_two_nodes(node: Node, workdir: Path) -> None:
    b = Node(workdir / "b", workdir / "config").start()
    try:
        with fm.Memory(node.data) as a, fm.Memory(b.data) as mb:
            a.add(ep(1, summary="from a"))
            results = a.sync(b.sync)
            assert results[0]["success"] is True, results
            assert mb.get("e1")["summary"] == "from a"
            assert any(p["addr"] == b.sync for p in a.peers())
            assert a.check()["ok"] is True
            assert a.resume()["ok"] is True
            manifest = a.backup(workdir / "bk")
            assert manifest["durable_lsn"] >= 1
            with pytest.raises(fm.InvalidRequest):
                a.backup(workdir / "bk")  # not empty now: refused, and not retried
    finally:
        b.stop()
