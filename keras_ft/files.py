"""Files written whole or not at all, file digests, and the errors they raise.

Every write of a checkpoint, adapter, export, report or record goes through
`atomic_path` (or `write_text`/`write_json` on top of it): the data lands in
a temporary file beside the target, which is renamed over it only once
complete, so a crash mid-write never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


class CorruptFileError(ValueError):
    """A model file (preset, GGUF or adapter) that cannot be read: truncated,
    damaged or not what its name says. The message names the file and what to do."""


@contextlib.contextmanager
def atomic_path(path: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yields a temporary path beside `path`; renames it to `path` on success.

    The temporary name ends with `path`'s own name, so writers that check a
    suffix (keras-hub's `save_lora_weights` wants `.lora.h5`) accept it, and
    the writer creates it, so it gets a new file's usual mode. On an
    exception the temporary file is removed and `path` is left as it was.
    With `fsync`, the data reach the disk before the rename.
    """
    path = Path(path)
    tmp = path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    try:
        yield tmp
        if fsync:
            fsync_path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, value) -> None:
    """Writes `value` as indented JSON to `path` atomically.

    Values JSON cannot hold (paths, numpy scalars) are written as `str(value)`.
    """
    write_text(path, json.dumps(value, indent=2, default=json_default) + "\n")


def to_plain(value):
    """`value` as a plain Python value where it is a numpy or JAX scalar (or a
    one-element array): `.item()`, an int or float; anything else unchanged."""
    if isinstance(value, (str, bytes, bool, int, float)) or value is None:
        return value
    if getattr(value, "size", None) == 1 and hasattr(value, "item"):
        return value.item()
    return value


def json_default(value):
    """`json.dumps(default=...)`: numpy/JAX scalars as numbers, the rest as str()."""
    plain = to_plain(value)
    return str(plain) if plain is value else plain


def replace_dir(new_dir: str | Path, out_dir: str | Path) -> None:
    """Renames the finished directory `new_dir` to `out_dir`, moving an old
    `out_dir` aside first and deleting it only after the rename."""
    new_dir, out_dir = Path(new_dir), Path(out_dir)
    old_dir = None
    if out_dir.exists():
        old_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
        os.replace(out_dir, old_dir / out_dir.name)
    os.replace(new_dir, out_dir)
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)


def fsync_path(path: str | Path) -> None:
    """Flushes a file's (or a directory's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def update_digest(digest, path: str | Path) -> None:
    """Feeds the bytes of file `path` to `digest` (a hashlib object) in 1 MiB blocks."""
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of file `path`."""
    digest = hashlib.sha256()
    update_digest(digest, path)
    return digest.hexdigest()
