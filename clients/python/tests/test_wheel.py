"""The package as the wheel installs it: `feral_memory` and the `feral-node` binary beside it
(scripts/test-python builds the wheel from this checkout with maturin and installs it into the
test environment), and the README's three lines that start a node, store and search."""

from __future__ import annotations

import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

import feral_memory as fm

RUN_ARGS = ["--no-mdns", "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"]


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> Path:
    """Only what the wheel installed: no FERAL_NODE_BIN, a private config home."""
    monkeypatch.delenv("FERAL_NODE_BIN", raising=False)
    monkeypatch.delenv("FERAL_API_TOKEN", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(workdir / "config"))
    return workdir


def test_the_wheel_installs_the_package_and_feral_node_beside_it(installed: Path) -> None:
    site = Path(sysconfig.get_path("purelib"))
    assert Path(fm.__file__).resolve().is_relative_to(site.resolve()), fm.__file__
    binary = fm.node_binary()
    assert Path(binary) == Path(sysconfig.get_path("scripts")) / "feral-node"
    assert os.access(binary, os.X_OK)
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "feral-node 0.1.0"


def test_the_readme_lines_start_a_node_store_and_search(installed: Path) -> None:
    with fm.start_node(installed / "store", args=RUN_ARGS) as node, fm.Memory(node.data) as memory:
        memory.add({"id": "e1", "session_id": "s", "event_type": "chat", "summary": "likes green tea"})
        hits = memory.search("tea")
        assert [h["id"] for h in hits] == ["e1"]
        assert node.running
    assert not node.running
    assert node.data == installed / "store"


def test_a_node_that_cannot_start_says_why(installed: Path) -> None:
    store = installed / "open"
    store.mkdir(mode=0o755)
    os.chmod(store, 0o755)
    with pytest.raises(fm.NodeFailed) as e:
        fm.start_node(store, args=RUN_ARGS, timeout=30)
    assert e.value.code == "node_start_failed"
    assert "accessible by its group or others" in e.value.message
    with pytest.raises(fm.NodeFailed) as missing:
        fm.start_node(store, binary=str(installed / "no-such-binary"))
    assert missing.value.code == "no_binary"
