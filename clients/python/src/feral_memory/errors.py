"""One exception class per family of the node's error codes (docs/api.md), all under
`FeralError`, each carrying the code, the message and the HTTP status."""

from __future__ import annotations

import re
from typing import Dict, Optional, Type


class FeralError(Exception):
    """An error answer of the node, or a transport failure that retries did not mend."""

    def __init__(self, code: str, message: str, status: Optional[int] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


class InvalidRequest(FeralError):
    """400: a malformed request (`invalid_json`, `invalid_op`, `invalid_request`, `invalid_query`,
    `bad_certificate`), or 413 `payload_too_large` / `batch_too_large`."""


class InvalidEpisode(InvalidRequest):
    """400 `invalid_episode`; `field` names the refused field when the node said which."""

    def __init__(self, code: str, message: str, status: Optional[int] = None) -> None:
        super().__init__(code, message, status)
        found = re.search(r"field `([^`]+)`", message)
        self.field: Optional[str] = found.group(1) if found else None


class Unauthorized(FeralError):
    """401 `unauthorized`: no token, or the wrong one (TCP only)."""


class Forbidden(FeralError):
    """403 `bad_host` / `cross_origin`: the request looked like it came from a web page."""


class NotFound(FeralError):
    """404 `not_found`."""


class Conflict(FeralError):
    """409 `op_id_conflict` (the op_id exists with other content) or `split_brain`."""


class Busy(FeralError):
    """503 `busy` (too many requests or followers at once), or 429 `too_many_peers`."""


class Paused(FeralError):
    """503 `io_paused` / `episodes_unavailable`: a fault paused writes or the projection;
    nothing acknowledged is lost. See `Memory.status()` and `Memory.resume()`."""


class DiskFull(Paused):
    """507 `disk_full`: nothing was lost and reads keep working; free space, then resume."""


class Corruption(FeralError):
    """500 `wal_corruption` / `index_corruption` / `episodes_corruption` / `search_corruption`."""


class ServerError(FeralError):
    """Any other 5xx (`io_error`, `internal`, …)."""


class ConnectionFailed(FeralError):
    """The node could not be reached (code `connection_failed`), after the retries."""


_BY_CODE: Dict[str, Type[FeralError]] = {
    "invalid_episode": InvalidEpisode,
    "unauthorized": Unauthorized,
    "bad_host": Forbidden,
    "cross_origin": Forbidden,
    "not_found": NotFound,
    "op_id_conflict": Conflict,
    "split_brain": Conflict,
    "busy": Busy,
    "too_many_peers": Busy,
    "io_paused": Paused,
    "episodes_unavailable": Paused,
    "disk_full": DiskFull,
}


def error_for(status: int, code: str, message: str) -> FeralError:
    """The exception for an error answer: by code first, by HTTP status otherwise."""
    cls = _BY_CODE.get(code)
    if cls is None:
        if code.endswith("_corruption"):
            cls = Corruption
        elif status in (400, 405, 408, 413, 415):
            cls = InvalidRequest
        elif status >= 500:
            cls = ServerError
        else:
            cls = FeralError
    return cls(code, message, status)
