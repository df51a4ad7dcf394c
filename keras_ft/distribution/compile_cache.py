"""JAX's persistent compilation cache, under keras_ft's cache directory.

The first training step of a run compiles for tens of seconds (45-50 s for
Gemma 3 270M on a CPU), and so does every rerun of the same settings. JAX can
keep compiled executables on disk and load them instead of compiling
(`jax_compilation_cache_dir`); `enable(cfg)` turns that on for a run, before
anything compiles:

* `cfg.compile_cache_dir`: "auto" is `<cache root>/jax_compile_cache`, the
  root of the converted-preset cache (`$KERAS_FT_CACHE`, else
  `~/.cache/keras_ft`); "" leaves JAX's cache as it is (off unless the user
  turned it on); KERAS_FT_COMPILE_CACHE=0 turns it off as "" does.
* What is stored is JAX's choice: compilations of at least
  `jax_persistent_cache_min_compile_time_secs` (1 s by default, so the many
  tiny compilations of a run do not fill the disk), settable as usual
  (JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 stores all).

A cached executable is the one JAX would compile (the key covers the
program, its shardings, the JAX/XLA versions and the devices), so results do
not change; tests/test_compile_cache.py checks that two runs' losses and
adapters are bit-equal.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

from keras_ft.config import Config
from keras_ft.gguf.embedded import cache_root

log = logging.getLogger(__name__)

AUTO = "auto"
SUBDIR = "jax_compile_cache"
ENV_SWITCH = "KERAS_FT_COMPILE_CACHE"  # "0": off, whatever the config says


def cache_dir(cfg: Config) -> Path | None:
    """Where `cfg`'s run keeps compiled executables; None when it keeps none."""
    if os.environ.get(ENV_SWITCH, "").strip().lower() in ("0", "false", "off", "no"):
        return None
    if not cfg.compile_cache_dir:
        return None
    if cfg.compile_cache_dir == AUTO:
        return cache_root() / SUBDIR
    return Path(cfg.compile_cache_dir).expanduser()


def enable(cfg: Config) -> Path | None:
    """Points JAX's persistent compilation cache at `cache_dir(cfg)`.

    Call it before the run compiles anything. A directory other than the one
    JAX uses already (an earlier run in this process) takes over from it.

    Returns:
        The cache directory, or None when the cache is off for this run.

    Raises:
        ValueError: the directory cannot be created or written.
    """
    path = cache_dir(cfg)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(
            f"compile_cache_dir: cannot create {path} ({e.strerror}). Choose a writable "
            "directory (--compile-cache-dir DIR), or turn the cache off with "
            f"--compile-cache-dir '' or {ENV_SWITCH}=0."
        ) from None
    if not os.access(path, os.W_OK):
        raise ValueError(
            f"compile_cache_dir: {path} is not writable. Choose a writable directory "
            f"(--compile-cache-dir DIR), or turn the cache off with --compile-cache-dir '' "
            f"or {ENV_SWITCH}=0."
        )
    if jax.config.jax_compilation_cache_dir != str(path):
        if jax.config.jax_compilation_cache_dir:
            compilation_cache.reset_cache()  # JAX opens its cache once; reopen it here
        compilation_cache.set_cache_dir(str(path))
    log.debug("JAX compilation cache: %s", path)
    return path
