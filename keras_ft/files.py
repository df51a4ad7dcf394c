"""Atomic file writes: a crash mid-write never leaves a half-written file."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: str | Path, value) -> None:
    """Writes `value` as indented JSON to `path` via a temporary file + rename.

    Values JSON cannot hold (paths, numpy scalars) are written as `str(value)`.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class CorruptFileError(ValueError):
    """A model file (preset, GGUF or adapter) that cannot be read: truncated,
    damaged or not what its name says. The message names the file and what to do."""
