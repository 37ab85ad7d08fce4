"""Starting a node from Python: the `feral-node` binary this package's wheel installs beside it
(in the environment's `bin/`), run as a child process until `stop()`."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sysconfig
import threading
from pathlib import Path
from types import TracebackType
from typing import Deque, List, Optional, Sequence, Type, Union

from .errors import FeralError

NODE_BIN_ENV = "FERAL_NODE_BIN"
"""A `feral-node` to run instead of the one installed with this package."""
START_TIMEOUT_S = 60.0
"""How long `start_node` waits for the node to serve (a first start creates its store)."""
STOP_TIMEOUT_S = 30.0
"""How long `stop` waits after SIGTERM before it kills the node."""
STDERR_LINES_KEPT = 50
"""The node's last stderr lines kept for the error of a failed start."""


class NodeFailed(FeralError):
    """`start_node` could not start the node: no binary, or it exited or did not serve in time
    (the message carries the node's last words)."""


def node_binary() -> str:
    """The `feral-node` to run: `FERAL_NODE_BIN`, else the one installed with this package (the
    environment's scripts directory), else one on `PATH`."""
    named = os.environ.get(NODE_BIN_ENV)
    if named:
        return named
    beside = Path(sysconfig.get_path("scripts")) / "feral-node"
    if beside.exists():
        return str(beside)
    found = shutil.which("feral-node")
    if found:
        return found
    raise NodeFailed(
        "no_binary",
        f"no feral-node next to this package ({beside}) or on PATH; install the feral-memory "
        f"wheel, or set {NODE_BIN_ENV}",
    )


class LocalNode:
    """A `feral-node run` child process. `data` is its data directory (pass it to `Memory`),
    `api` its TCP API address and `sync` its QUIC address."""

    def __init__(self, proc: "subprocess.Popen[str]", data: Path, api: str, sync: str, stderr: Deque[str]) -> None:
        self._proc = proc
        self._stderr = stderr
        self.data = data
        self.api = api
        self.sync = sync

    @property
    def running(self) -> bool:
        return self._proc.poll() is None

    def stop(self) -> int:
        """Stops the node (SIGTERM, then SIGKILL after `STOP_TIMEOUT_S`); its exit status."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def __enter__(self) -> "LocalNode":
        return self

    def __exit__(
        self, kind: Optional[Type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        self.stop()


def start_node(
    data_dir: Optional[Union[str, Path]] = None,
    *,
    args: Sequence[str] = (),
    binary: Optional[str] = None,
    timeout: float = START_TIMEOUT_S,
) -> LocalNode:
    """Starts `feral-node run` on `data_dir` (default: `FERAL_DATA_DIR`, else the node's own
    default, `~/.local/share/feral-memory`), creating the store on first use, and returns once
    it serves. `args` go to `run` as they are (`--no-mdns`, `--api 127.0.0.1:0`, `--peers`…).
    Raises `NodeFailed` when it exits or does not serve within `timeout` seconds."""
    command: List[str] = [binary or node_binary()]
    if data_dir is not None:
        command += ["--data", str(data_dir)]
    command += ["run", *args]
    try:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise NodeFailed("no_binary", f"{command[0]}: {e}") from e
    assert proc.stdout is not None and proc.stderr is not None
    lines: List[str] = []
    stderr: Deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
    ready = threading.Event()

    def read_stdout() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if len(lines) < 2:
                lines.append(line)
                if len(lines) == 2:
                    ready.set()
        ready.set()

    def read_stderr() -> None:
        # Read to the end so the node never blocks on a full pipe; the last lines are kept.
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr.append(line.rstrip("\n"))

    threading.Thread(target=read_stdout, daemon=True).start()
    threading.Thread(target=read_stderr, daemon=True).start()
    if not ready.wait(timeout) or len(lines) < 2:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        said = "; ".join(stderr) or "nothing on stderr"
        raise NodeFailed(
            "node_start_failed",
            f"feral-node did not serve within {timeout} s (exit status {proc.returncode}): {said}",
        )
    # `listening on ADDR (node id …)` and `api on http://ADDR (…) and unix:PATH`.
    sync = lines[0].split()[2]
    api = lines[1].split()[2].removeprefix("http://")
    socket = lines[1].rstrip().rsplit("unix:", 1)[-1]
    return LocalNode(proc, Path(socket).parent, api, sync, stderr)
