"""A training subprocess killed with SIGKILL, then resumed, ends where an
uninterrupted run ends: same adapter, every example seen once per epoch.

The three runs share a JAX persistent compilation cache, so only the first
pays for XLA compilation (a cached executable is the same program).
"""

import dataclasses
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_pipeline import PAIRS

from keras_ft import Config, finetune
from keras_ft.train.checkpoint import CheckpointError

REPO = Path(__file__).resolve().parents[2]
EPOCHS, BATCHES_PER_EPOCH = 3, 5  # 10 examples in batches of 2: 15 steps


def run_args(preset, data, out, no_samples):
    return [
        "--config",
        str(no_samples),  # sample_prompts: [] (no flag gives an empty list)
        "--preset",
        str(preset),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "2",
        "--learning-rate",
        "1e-2",
        "--lr-schedule",
        "cosine",
        "--warmup-steps",
        "3",
        "--lora-targets",
        "all",
        "--validation-fraction",
        "0",
        "--sequence-length",
        "64",
        "--checkpoint-every-steps",
        "1",
        "--keep-checkpoints",
        "2",
    ]


def start(args, log, cache):
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "keras_ft.run", *args],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def adapter_arrays(path):
    arrays = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, obj: (
                arrays.__setitem__(name, np.asarray(obj)) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return arrays


def step_records(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    return [r for r in records if "epoch" not in r]


def test_sigkill_at_a_random_step_then_resume_matches_an_uninterrupted_run(tiny_gemma, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS))
    out = tmp_path / "killed"
    # Seeded, so a failure reproduces: KERAS_FT_KILL_SEED=<seed> reruns that kill.
    seed = int(os.environ.get("KERAS_FT_KILL_SEED", random.SystemRandom().randrange(2**32)))
    kill_after = random.Random(seed).randint(2, 8)  # of 15 steps; usually mid-epoch
    print(
        f"kill seed {seed} (KERAS_FT_KILL_SEED={seed} reruns it): SIGKILL after step {kill_after}"
    )
    no_samples = tmp_path / "no_samples.yaml"  # samples are not checked: none generated
    no_samples.write_text("sample_prompts: []\n")
    args = run_args(tiny_gemma, data, out, no_samples)
    cache = tmp_path / "jax_cache"
    with (tmp_path / "killed.log").open("w") as log:
        process = start(args, log, cache)
        deadline = time.monotonic() + 300
        while not any(int(p.name[5:]) >= kill_after for p in (out / "checkpoints").glob("step-*")):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        assert process.wait() == -signal.SIGKILL
    killed_at = max(int(p.name[5:]) for p in (out / "checkpoints").glob("step-*"))
    assert killed_at < EPOCHS * BATCHES_PER_EPOCH, "the run finished before the kill"

    with (tmp_path / "resumed.log").open("w") as log:
        assert start(args, log, cache).wait() == 0, (tmp_path / "resumed.log").read_text()
    resumed_log = (tmp_path / "resumed.log").read_text()
    assert "Resuming from" in resumed_log and "step-" in resumed_log
    # stdout and stderr: keras_ft's lines, none of TensorFlow's or JAX's start-up noise.
    for noise in (
        "absl::InitializeLog",
        "oneDNN custom operations",
        "cudart_stub",
        "cuInit",
        "Unable to initialize backend",
        "precompiled_charsmap",
    ):
        assert noise not in resumed_log, resumed_log

    reference = tmp_path / "reference"  # uninterrupted, same flags and seed
    with (tmp_path / "reference.log").open("w") as log:
        process = start(run_args(tiny_gemma, data, reference, no_samples), log, cache)
        assert process.wait() == 0, (tmp_path / "reference.log").read_text()

    expected = adapter_arrays(reference / "adapter.lora.h5")
    actual = adapter_arrays(out / "adapter.lora.h5")
    assert expected.keys() == actual.keys() and len(expected) > 4
    for name in expected:
        np.testing.assert_allclose(
            actual[name],
            expected[name],
            rtol=0,
            atol=1e-6,
            err_msg=f"{name} (killed after step {killed_at})",
        )
    assert np.abs(np.concatenate([a.ravel() for a in expected.values()])).max() > 0

    # Data position: each step once, consuming the same examples as the reference;
    # each epoch sees every training example exactly once.
    steps, reference_steps = step_records(out), step_records(reference)
    assert [r["step"] for r in steps] == list(range(1, EPOCHS * BATCHES_PER_EPOCH + 1))
    assert [r["examples"] for r in steps] == [r["examples"] for r in reference_steps]
    for epoch in range(EPOCHS):
        seen = sum(
            (
                r["examples"]
                for r in steps[epoch * BATCHES_PER_EPOCH : (epoch + 1) * BATCHES_PER_EPOCH]
            ),
            [],
        )
        assert sorted(seen) == list(range(10)), (epoch, seen)


def test_resume_refuses_an_edited_data_file_with_the_same_row_count(tiny_gemma, tmp_path, caplog):
    data = tmp_path / "pairs.jsonl"
    rows = [json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS]
    data.write_text("".join(rows))
    cfg = Config(
        preset=str(tiny_gemma),
        data=(str(data),),
        max_steps=2,
        batch_size=2,
        validation_fraction=0.0,
        sequence_length=64,
        sample_prompts=(),  # its samples are not checked: no generation compiled
        output_dir=str(tmp_path / "run"),
        tokenized_cache_dir=str(tmp_path / "tokens"),
    )
    finetune(cfg)
    with caplog.at_level(logging.INFO, logger="keras_ft.train.rundir"):  # resume_or_start
        finetune(cfg)  # unchanged data: resumes (at the end, so nothing to train)
    assert "Resuming from" in caplog.text

    rows[3] = json.dumps({"prompt": PAIRS[3][0], "completion": "Edited."}) + "\n"
    data.write_text("".join(rows))  # same number of rows, one record changed
    with pytest.raises(CheckpointError, match=rf"{data} was edited.*--no-resume"):
        finetune(cfg)
    finetune(dataclasses.replace(cfg, resume=False))  # starting over is allowed
