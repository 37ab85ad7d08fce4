"""The client on a real full disk: a node whose store is on a size-limited tmpfs (as root;
skipped with the reason otherwise) answers `DiskFull` (a `Paused`), keeps every acknowledged
episode readable, and takes writes again after space is freed and `resume()`."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

import feral_memory as fm
from conftest import Node, node_bin

# Writes tried before the disk must have filled (each is 64 episodes of about 1 KiB).
BATCHES_MAX = 2_000


@pytest.fixture
def tmpfs(workdir: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("not root: a size-limited tmpfs cannot be mounted, so the full disk is not tried")
    mount = workdir / "vol"
    mount.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(volume: Path, leave: int) -> Path:
    """Fills the volume with one file, then gives `leave` bytes back."""
    filler = volume / "filler"
    with open(filler, "wb") as f:
        block = b"\0" * (1 << 20)
        while True:
            try:
                f.write(block)
                f.flush()
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


def test_a_full_disk_raises_disk_full_keeps_reads_and_resumes(workdir: Path, tmpfs: Path) -> None:
    data = tmpfs / "store"
    env = {**os.environ, "XDG_CONFIG_HOME": str(workdir / "config")}
    subprocess.run([node_bin(), "--data", str(data), "init", "--segment-bytes", "65536"], check=True, env=env)
    node = Node(data, workdir / "config").start()
    try:
        filler = fill(tmpfs, leave=1 << 20)
        acked: List[str] = []
        with fm.Memory(data) as m:
            full = None
            for b in range(BATCHES_MAX):
                batch = [
                    {"id": f"d{b}-{i}", "session_id": "s", "event_type": "chat", "summary": "y" * 1000}
                    for i in range(64)
                ]
                try:
                    m.add_many(batch)
                except fm.DiskFull as e:
                    full = e
                    break
                acked += [episode["id"] for episode in batch]
            assert full is not None, f"{BATCHES_MAX} batches fitted on an 8 MiB volume"
            assert full.code == "disk_full" and isinstance(full, fm.Paused)
            assert acked, "some writes were acknowledged before the disk filled"
            assert m.status()["io_paused"] is True
            with pytest.raises(fm.Paused):
                m.add({"id": "after", "session_id": "s", "event_type": "chat", "summary": "x"})
            # Reads go on while writes are paused: every acknowledged episode is there.
            for episode_id in (acked[0], acked[len(acked) // 2], acked[-1]):
                assert m.get(episode_id)["id"] == episode_id
            filler.unlink()
            report = m.resume()
            assert report["ok"] is True, report
            assert m.status()["io_paused"] is False
            m.add({"id": "after", "session_id": "s", "event_type": "chat", "summary": "x"})
            assert m.get("after")["summary"] == "x"
            assert m.get(acked[-1])["id"] == acked[-1]
    finally:
        node.stop()
