"""What every transport shares: the error it raises and where file backends write."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path


class SendError(Exception):
    """A message could not be handed over; ``permanent`` when retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def spool_path(folder: Path, now: datetime, outbox_id: int, suffix: str) -> Path:
    """``<folder>/<UTC timestamp>-<outbox id><suffix>``: sorted by time, unique per attempt."""
    return folder / f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{outbox_id}{suffix}"


def write_atomically(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so a reader never sees half a message."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
