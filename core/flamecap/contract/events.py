"""JSON-lines event protocol between the core (subprocess, stdout) and the add-on (stdlib only).

One JSON object per line, each with ``"event"`` and ``"protocol"``:

- ``{"event": "start", "command": "track", ...}``
- ``{"event": "progress", "stage": "landmarks", "fraction": 0.42, "eta_s": 3.1, "message": "..."}``
  ``fraction`` is overall progress in [0, 1]; ``stage`` is one of :data:`STAGES`.
- ``{"event": "log", "level": "warning", "message": "..."}``
- ``{"event": "error", "message": "one line, actionable", "code": 3}``
- ``{"event": "done", "result": "/abs/path/result.npz"}``
- ``{"event": "shot", "shot": "name", "status": "queued|running|done|skipped|failed|cancelled", "result": "...",
  "error": "one line"}`` (``flamecap batch``: one per shot status change; see :data:`SHOT_STATUSES`)

Lines that are not JSON objects with a known event are ignored by readers (library warnings on stdout).
Cancel = terminate the process; the core writes outputs atomically, so nothing partial remains.
"""
from __future__ import annotations

import json
import time
from typing import IO, Any, Callable, Iterator

PROTOCOL_VERSION = 1
EVENTS = ("start", "progress", "log", "error", "done", "shot")
STAGES = ("load", "landmarks", "embedding", "identity", "fit", "refine", "smooth", "write", "render", "export",
          "batch")
SHOT_STATUSES = ("queued", "running", "done", "skipped", "failed", "cancelled")

ProgressCallback = Callable[[str, float, str], None]  # (stage, fraction in [0,1], message)


def make_event(event: str, **fields: Any) -> dict:
    if event not in EVENTS:
        raise ValueError(f"unknown event '{event}'")
    return {"event": event, "protocol": PROTOCOL_VERSION, **fields}


def encode_event(event: str, **fields: Any) -> str:
    return json.dumps(make_event(event, **fields), sort_keys=True)


def parse_event(line: str) -> dict | None:
    """Parse one line; return the event dict, or ``None`` for anything that is not a protocol event."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("event") not in EVENTS:
        return None
    return obj


def iter_events(stream: IO[str]) -> Iterator[dict]:
    for line in stream:
        ev = parse_event(line)
        if ev is not None:
            yield ev


class JsonlEmitter:
    """Writes protocol events to a stream; its :meth:`progress` is a ``ProgressCallback`` with ETA."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self._t0 = time.monotonic()

    def emit(self, event: str, **fields: Any) -> None:
        self.stream.write(encode_event(event, **fields) + "\n")
        self.stream.flush()

    def progress(self, stage: str, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        elapsed = time.monotonic() - self._t0
        eta = elapsed * (1.0 - fraction) / fraction if fraction > 1e-3 else None
        self.emit("progress", stage=stage, fraction=round(fraction, 4),
                  eta_s=None if eta is None else round(eta, 1), message=message)
