"""Is a hub reachable, and what is already in kagglehub's cache: one answer.

Used by `model.resolve_preset` (keras-hub presets on Kaggle/Hugging Face) and
`sources.resolve_kaggle` (Kaggle datasets), so that both honour the same
offline switch, probe the network the same bounded way, and read kagglehub's
cache in kagglehub's own layout (its `.complete` markers included).

  * `KERAS_FT_OFFLINE=1` (or true/yes/on): never touch the network; use the
    cache or fail at once saying what to do.
  * `unreachable(host, timeout)`: the probe. It runs in a daemon thread,
    because name resolution (`getaddrinfo`) ignores socket timeouts: with a
    slow resolver a bare `socket.create_connection` blocks far longer.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path

OFFLINE_ENV = "KERAS_FT_OFFLINE"
_TRUE = ("1", "true", "yes", "on")
PROBE_TIMEOUT = 3.0  # seconds: the longest an offline run waits for the network


def offline() -> bool:
    """Whether `KERAS_FT_OFFLINE` asks for no network access at all."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in _TRUE


def unreachable(host: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None if `host:443` accepts a connection within `timeout`, else why not.

    Returns within about `timeout` seconds whatever the resolver does: the
    connection (name resolution included) runs in a daemon thread that is
    abandoned when it takes longer.
    """
    result: list[str | None] = [f"no answer within {timeout:g} s"]

    def connect():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result[0] = None
        except OSError as e:
            result[0] = f"{type(e).__name__}: {e}"

    thread = threading.Thread(target=connect, daemon=True, name=f"probe-{host}")
    thread.start()
    thread.join(timeout)
    return result[0]


def kaggle_host() -> str:
    """The host name of the Kaggle endpoint kagglehub talks to."""
    from kagglesdk.kaggle_env import get_endpoint, get_env  # heavy: kagglesdk

    return re.sub(r"^\w+://", "", get_endpoint(get_env())).split("/")[0].split(":")[0]


def kaggle_cache_folder() -> Path:
    """kagglehub's cache root (`$KAGGLEHUB_CACHE`, default ~/.cache/kagglehub)."""
    from kagglehub.config import get_cache_folder  # heavy: kagglehub

    return Path(get_cache_folder())


def cached_kaggle(kind: str, handle: str, files: tuple[str, ...] = ()) -> Path | None:
    """The newest complete cached copy of a Kaggle model or dataset, or None.

    Complete means what kagglehub itself checks before it serves a file from
    its cache: the bundle's `<version>.complete` marker, or (for a single
    file, as keras-hub downloads presets file by file) that file's marker
    under `.complete/<version>/`.

    Args:
        kind: "model" (`owner/model/framework/variation[/version]`) or
            "dataset" (`owner/dataset[/versions/N]`).
        handle: the kagglehub handle, without `kaggle://`.
        files: files inside the bundle that must all be complete; () asks
            for the whole bundle.

    Returns:
        The cached version's directory (`files` lie inside it).
    """
    from kagglehub.cache import Cache, get_cached_path  # heavy: kagglehub
    from kagglehub.handle import parse_dataset_handle, parse_model_handle  # heavy: kagglehub

    parse = {"model": parse_model_handle, "dataset": parse_dataset_handle}[kind]
    try:
        parsed = parse(handle)
    except ValueError:
        return None
    if parsed.is_versioned():
        versions = [parsed.version]
    else:  # newest first; the folder holding the versions in kagglehub's layout
        versions_dir = Path(get_cached_path(parsed.with_version(1))).parent
        versions = sorted(
            (int(p.name) for p in versions_dir.glob("*") if p.name.isdigit() and p.is_dir()),
            reverse=True,
        )
    cache = Cache()
    for version in versions:
        versioned = parsed.with_version(version)
        bundle = cache.load_from_cache(versioned)
        if not files:
            if bundle:
                return Path(bundle)
            continue
        paths = [
            cache.load_from_cache(versioned, f)
            or (bundle and os.path.exists(os.path.join(bundle, f)) and os.path.join(bundle, f))
            for f in files
        ]
        if all(paths):
            return Path(get_cached_path(versioned))
    return None
