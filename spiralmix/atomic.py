"""Files written atomically: a kill at any moment leaves the old file or the new one."""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, sync it, rename it over path."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_torch_atomic(path: Path, data: object) -> None:
    """``torch.save`` through :func:`write_atomic`. Serialised in memory first: written
    straight to a full disk, torch.save fails with a RuntimeError about a zip position,
    a plain write with ``OSError: No space left on device``."""
    import torch  # here: reports write JSON and text through this module too

    buffer = io.BytesIO()
    torch.save(data, buffer)
    write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()))


def write_json_atomic(path: Path, data: object) -> None:
    """JSON through :func:`write_atomic`; non-finite numbers (a diverged run's) become null."""
    text = json.dumps(_finite_or_none(data), indent=2, allow_nan=False)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _finite_or_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(v) for v in value]
    return value
