"""What the client adds to the API's own time: a batch append of 1,000 episodes and a search,
each through `Memory` and as raw httpx requests of the same bytes on the same socket,
interleaved round by round; prints medians and the ratio.

    python bench/overhead.py --data DIR      # a running `feral-node run --data DIR`
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List

import httpx

import feral_memory as fm

BATCH = 1_000
ROUNDS = 30


def episodes(tag: str) -> List[Dict[str, Any]]:
    return [
        {"id": f"{tag}-{i}", "session_id": "bench", "event_type": "chat",
         "summary": f"benchmark note {i} about tea and trains", "op_id": uuid.uuid4().hex}
        for i in range(BATCH)
    ]


def timed(work: Callable[[], Any]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    args = parser.parse_args()
    memory = fm.Memory(args.data)
    raw = httpx.Client(base_url="http://localhost", transport=httpx.HTTPTransport(uds=str(args.data / "api.sock")))
    results: Dict[str, List[float]] = {"append_client": [], "append_raw": [], "search_client": [], "search_raw": []}
    def raw_append(batch: List[Dict[str, Any]]) -> None:
        response = raw.post("/v1/episodes", json=batch)
        response.raise_for_status()
        response.json()

    def raw_search() -> None:
        response = raw.get("/v1/search", params={"q": "tea trains", "limit": 10, "session": "bench"})
        response.raise_for_status()
        response.json()

    # Appends first (each round's order alternates), then searches over the same store, so
    # no search pays for committing the other side's new episodes to the search index.
    for r in range(args.rounds + 1):
        a, b = episodes(f"c{r}"), episodes(f"r{r}")
        if r % 2:
            raw_s, client_s = timed(lambda: raw_append(b)), timed(lambda: memory.add_many(a))
        else:
            client_s, raw_s = timed(lambda: memory.add_many(a)), timed(lambda: raw_append(b))
        if r:
            results["append_client"].append(client_s)
            results["append_raw"].append(raw_s)
    memory.search("tea", limit=1)  # commits what the appends left to the search index
    for r in range(args.rounds + 1):
        if r % 2:
            raw_s, client_s = timed(raw_search), timed(lambda: memory.search("tea trains", limit=10, session="bench"))
        else:
            client_s, raw_s = timed(lambda: memory.search("tea trains", limit=10, session="bench")), timed(raw_search)
        if r:
            results["search_client"].append(client_s)
            results["search_raw"].append(raw_s)
    med = {k: statistics.median(v) * 1000 for k, v in results.items()}
    for what in ("append", "search"):
        c, w = med[f"{what}_client"], med[f"{what}_raw"]
        print(f"{what}: client {c:.2f} ms, raw httpx {w:.2f} ms, client/raw {c / w * 100:.0f} % "
              f"(median of {args.rounds})")


if __name__ == "__main__":
    main()
