"""feral-memory's Python client: `Memory` (blocking) and `AsyncMemory` (asyncio) talk to a
running `feral-node` over its Unix socket (default) or TCP with its token; `start_node` runs
the `feral-node` the wheel installs beside this package."""

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
from .node import LocalNode, NodeFailed, node_binary, start_node
from .types import Appended, Change, Episode, HistoryOp, Row, Score, SearchHit

__all__ = [
    "AsyncMemory",
    "Memory",
    "new_op_id",
    "LocalNode",
    "NodeFailed",
    "node_binary",
    "start_node",
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
