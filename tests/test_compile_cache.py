"""JAX's persistent compilation cache: a rerun loads what the first run compiled."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from keras_ft import Config
from keras_ft.distribution import compile_cache

# A fresh interpreter per run: in one process, JAX's in-memory caches would
# answer before the persistent one is asked.
RUN = textwrap.dedent(
    """
    import json, sys
    import jax.monitoring

    events = []
    jax.monitoring.register_event_listener(lambda name, **kw: events.append(name))
    from keras_ft import Config, finetune

    preset, data, out, cache = sys.argv[1:]
    result = finetune(Config(
        preset=preset, data=(data,), validation_fraction=0.0, max_steps=2, batch_size=2,
        output_dir=out, tokenized_cache_dir="", compile_cache_dir=cache,
        sample_prompts=("Hi",), max_new_tokens=2,
    ))
    print(json.dumps({
        "loss": result.history["loss"],
        "hits": events.count("/jax/compilation_cache/cache_hits"),
        "misses": events.count("/jax/compilation_cache/cache_misses"),
    }))
    """
)


def _run(preset, data, out, cache):
    env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # tiny: store all
    env.pop(compile_cache.ENV_SWITCH, None)
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(preset), str(data), str(out), str(cache)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an H5 file (the LoRA weights and rank), by path."""
    arrays = {}
    with h5py.File(path, "r") as file:
        file.visititems(
            lambda name, item: (
                arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


def _entries(cache: Path) -> set[str]:
    return {p.name for p in cache.iterdir() if p.name.endswith("-cache")}


def test_a_second_identical_run_loads_its_compiled_programs_and_trains_the_same(
    tiny_gemma, tmp_path
):
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": p, "completion": c}) + "\n"
            for p, c in [("Name a fox.", "The quick fox."), ("Count.", "1 2 3")] * 2
        )
    )
    cache = tmp_path / "compile_cache"
    first = _run(tiny_gemma, data, tmp_path / "run1", cache)
    written = _entries(cache)
    assert first["hits"] == 0 and first["misses"] > 0 and written
    second = _run(tiny_gemma, data, tmp_path / "run2", cache)
    assert second["hits"] > 0 and second["misses"] == 0, second
    assert _entries(cache) == written  # nothing compiled anew
    # The cached programs compute what the compiled ones did, bit for bit.
    assert second["loss"] == first["loss"]
    first_adapter = _arrays(tmp_path / "run1/adapter.lora.h5")
    second_adapter = _arrays(tmp_path / "run2/adapter.lora.h5")
    assert first_adapter.keys() == second_adapter.keys() and len(first_adapter) > 1
    for name, value in first_adapter.items():
        np.testing.assert_array_equal(value, second_adapter[name], err_msg=name)


def test_where_the_cache_lives(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_FT_CACHE", str(tmp_path / "root"))
    monkeypatch.delenv(compile_cache.ENV_SWITCH, raising=False)
    assert compile_cache.cache_dir(Config()) == tmp_path / "root" / "jax_compile_cache"
    assert compile_cache.cache_dir(Config(compile_cache_dir=str(tmp_path / "c"))) == tmp_path / "c"
    assert compile_cache.cache_dir(Config(compile_cache_dir="")) is None  # off
    monkeypatch.setenv(compile_cache.ENV_SWITCH, "0")
    assert compile_cache.cache_dir(Config()) is None  # off, whatever the config says


def test_an_unwritable_cache_dir_is_refused_naming_the_setting(tmp_path, monkeypatch):
    monkeypatch.delenv(compile_cache.ENV_SWITCH, raising=False)  # the suite turns it off
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"compile_cache_dir: cannot create .*a_file/sub"):
        compile_cache.enable(Config(compile_cache_dir=str(blocker / "sub")))
