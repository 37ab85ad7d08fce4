"""feral-memory's Python client: `Memory` (blocking) and `AsyncMemory` (asyncio) talk to a
running `feral-node` over its Unix socket (default) or TCP with its token."""

from .client import AsyncMemory, Memory, new_op_id
from .errors import (
    Busy,
    ConnectionFailed,
    Conflict,
    Corruption,
    DiskFull,
    FeralError,
    Forbidden,
    InvalidEpisode,
    InvalidRequest,
    NotFound,
    Paused,
    ServerError,
    Unauthorized,
)
from .types import Appended, Change, Episode, HistoryOp, Row, Score, SearchHit

__all__ = [
    "AsyncMemory",
    "Memory",
    "new_op_id",
    "Busy",
    "ConnectionFailed",
    "Conflict",
    "Corruption",
    "DiskFull",
    "FeralError",
    "Forbidden",
    "InvalidEpisode",
    "InvalidRequest",
    "NotFound",
    "Paused",
    "ServerError",
    "Unauthorized",
    "Appended",
    "Change",
    "Episode",
    "HistoryOp",
    "Row",
    "Score",
    "SearchHit",
]
