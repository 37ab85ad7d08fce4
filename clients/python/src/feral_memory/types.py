"""The shapes of the node's answers (docs/api.md), as TypedDicts: plain dicts at run time."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, TypedDict

JSON = Any
"""Any JSON value."""


class Episode(TypedDict, total=False):
    """An episode as stored (`hlc` and `op_id` name the op that wrote it)."""

    id: str
    session_id: str
    event_type: str
    summary: str
    detail: str
    importance: float
    created_at: float
    emotions: List[str]
    participants: List[str]
    location: Optional[str]
    hlc: str
    op_id: str


class Appended(TypedDict):
    """One op the node took: its op_id, HLC, and whether it was already there."""

    op_id: str
    hlc: str
    duplicate: bool


class Score(TypedDict):
    """How a hit's score is made: total = bm25 × importance × recency."""

    total: float
    bm25: float
    importance: float
    recency: float


class SearchHit(Episode, total=False):
    """An episode found by search, with its score."""

    score: Score


class Row(TypedDict):
    """A live row of any table."""

    table: str
    row_id: str
    data: JSON
    hlc: str
    op_id: str


class Change(TypedDict):
    """One op of the change feed; `cursor` is the position after it."""

    cursor: str
    lsn: int
    table: str
    row_id: str
    kind: str
    hlc: str
    origin: str
    op_id: str


class HistoryOp(TypedDict, total=False):
    """One op that touched a row."""

    op_id: str
    kind: str
    hlc: str
    origin: str
    seq: int
    node_id: Optional[str]
    lsn: int
    data: JSON


Status = Dict[str, JSON]
"""The node's status object (docs/api.md, `GET /v1/status`)."""

CheckReport = Dict[str, JSON]
"""The integrity report (`ok`, and `wal`, `index`, `episodes`, `search` each `ok` or a fault)."""

SyncResult = Dict[str, JSON]
"""One sync session's result (`success`, `sent`, `received`, … or `error`)."""
