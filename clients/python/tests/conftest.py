"""Real `feral-node run` processes for the client's tests (mDNS off, loopback ports)."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, List, Optional

import httpx
import pytest

from openapi_check import Checker

REPO = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 60


def node_bin() -> str:
    """The feral-node binary: FERAL_NODE_BIN, else the workspace's debug build."""
    path = os.environ.get("FERAL_NODE_BIN") or str(REPO / "target" / "debug" / "feral-node")
    if not Path(path).exists():
        pytest.fail(f"no feral-node at {path}: run `cargo build` or set FERAL_NODE_BIN")
    return path


class Node:
    """One `feral-node run` on a data directory; start() again after stop() restarts it."""

    def __init__(self, data: Path, config_home: Path, extra: Optional[List[str]] = None) -> None:
        self.data = data
        self.config_home = config_home
        self.extra = extra or []
        self.proc: Optional[subprocess.Popen[str]] = None
        self.api = ""
        self.sync = ""

    def start(self, api: str = "127.0.0.1:0", listen: str = "127.0.0.1:0") -> "Node":
        env = {**os.environ, "XDG_CONFIG_HOME": str(self.config_home)}
        env.pop("FERAL_API_TOKEN", None)
        args = [node_bin(), "--data", str(self.data), "run", "--no-mdns", "--listen", listen, "--api", api]
        self.proc = subprocess.Popen(args + self.extra, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        lines: List[str] = []
        done = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if len(lines) < 2:
                    lines.append(line)
                    if len(lines) == 2:
                        done.set()
            done.set()

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(START_TIMEOUT_S) or len(lines) < 2:
            self.stop()
            pytest.fail(f"feral-node did not print its addresses: {lines}")
        self.sync = lines[0].split()[2]
        self.api = lines[1].split()[2].removeprefix("http://")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="feral-py-") as d:
        os.chmod(d, 0o700)
        yield Path(d)


@pytest.fixture
def node(workdir: Path) -> Iterator[Node]:
    n = Node(workdir / "store", workdir / "config").start()
    yield n
    n.stop()


CHECKER = Checker.load()


def _check(response: httpx.Response) -> None:
    request = response.request
    CHECKER.check(
        request.method,
        request.url.path,
        response.status_code,
        response.headers.get("content-type", ""),
        response.content,
    )


@pytest.fixture(autouse=True)
def answers_match_the_description(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer the clients receive is validated against docs/openapi.json (a streamed
    one, the change feed's events, is read by the client as it comes and not checked here)."""
    send = httpx.Client.send
    send_async = httpx.AsyncClient.send

    def checked(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        response = send(self, request, **kw)
        if not kw.get("stream"):
            _check(response)
        return response

    async def checked_async(self: httpx.AsyncClient, request: httpx.Request, **kw: Any) -> httpx.Response:
        response = await send_async(self, request, **kw)
        if not kw.get("stream"):
            _check(response)
        return response

    monkeypatch.setattr(httpx.Client, "send", checked)
    monkeypatch.setattr(httpx.AsyncClient, "send", checked_async)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    ops = sorted(CHECKER.checked)
    terminalreporter.write_line(
        f"answers validated against docs/openapi.json: {sum(CHECKER.checked.values())} "
        f"answers of {len(ops)} operations"
    )
