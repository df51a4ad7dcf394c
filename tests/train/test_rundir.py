"""The run directory: nothing written before the run is accepted, nothing
deleted that keras_ft did not write, one run at a time, clear filesystem errors.

Runs go through the in-process CLI (`keras_ft.run.main`) on a tiny preset.
"""

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_pipeline import PAIRS

from keras_ft.cli.data import main as data_main
from keras_ft.cli.run import main as run_main
from keras_ft.evaluation.runs import resolve_run
from keras_ft.train.rundir import LOCK, MARKER, OUTPUTS, RunLock

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in PAIRS))
    return path


def args(preset, data, out, *extra):
    return [
        "--preset",
        str(preset),
        "--data",
        str(data),
        "--output-dir",
        str(out),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--validation-fraction",
        "0.2",
        "--sequence-length",
        "32",
        "--sample-prompts",
        "Hi",
        "--max-new-tokens",
        "1",
        "--tokenized-cache-dir",
        "",
        *extra,
    ]


def invoke(argv):
    return CliRunner().invoke(run_main, [str(a) for a in argv])


def refused(result, *needles):
    """Exit 1 with a one-paragraph message (a ClickException), no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in result.output, (needle, result.output)
    return result.output


def tree(path):
    """{relative path: sha256 of a file, or 'dir'} of everything under `path`."""
    path = Path(path)
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(path.rglob("*"))
    }


@pytest.fixture(scope="module")
def finished_run(tiny_gemma, pairs, tmp_path_factory):
    """A finished run (seed 0, one step, a checkpoint), copied by each test."""
    out = tmp_path_factory.mktemp("finished") / "run"
    result = invoke(args(tiny_gemma, pairs, out))
    assert result.exit_code == 0, result.output
    return out


def test_a_refused_rerun_leaves_the_run_identity_byte_identical(
    finished_run, tiny_gemma, pairs, tmp_path
):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    before = tree(out)
    result = invoke(args(tiny_gemma, pairs, out, "--seed", "1"))
    refused(result, "Cannot resume", "seed: 0 -> 1", "--no-resume")
    assert tree(out) == before  # config.json, marker, checkpoints: all as they were
    # `evaluate --adapter RUN` rebuilds the held-out split of the run that trained it.
    _, run_cfg = resolve_run(str(out))
    assert run_cfg.seed == 0


def test_evaluate_reads_the_config_stored_with_a_checkpoint(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    step = next((out / "checkpoints").glob("step-*"))
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "seed": 7}))  # another run's
    run_dir, run_cfg = resolve_run(str(step / "adapter.lora.h5"))
    assert run_dir == out and run_cfg.seed == 0  # the checkpoint's own state.json


def test_a_keras_hub_preset_dir_is_refused_and_left_unchanged(tiny_gemma, pairs, tmp_path):
    preset = tmp_path / "preset"
    shutil.copytree(tiny_gemma, preset)
    before = tree(preset)
    for extra in ((), ("--overwrite",)):
        output = refused(
            invoke(args(tiny_gemma, pairs, preset, *extra)),
            "keras-hub preset directory",
            "--output-dir",
        )
        assert str(preset) in output
        assert tree(preset) == before


def test_a_user_folder_is_refused_and_overwrite_touches_only_keras_ft_outputs(
    tiny_gemma, pairs, tmp_path
):
    out = tmp_path / "mine"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.out.mine").write_text("my events")
    (out / "best").mkdir()
    (out / "best" / "weights.h5").write_text("my best weights")
    (out / "notes.txt").write_text("my notes")
    (out / "data").mkdir()
    (out / "data" / "train.jsonl").write_text("{}\n")
    before = tree(out)
    refused(
        invoke(args(tiny_gemma, pairs, out)),
        "not a keras_ft run directory",
        "--overwrite",
        "notes.txt",
    )
    assert tree(out) == before

    # --overwrite never deletes a user's file, even at one of keras_ft's names:
    # the user's tensorboard/ and best/ make it refuse, naming them.
    refused(
        invoke(args(tiny_gemma, pairs, out, "--overwrite")),
        "best, tensorboard",
        "never deletes files it did not write",
    )
    assert tree(out) == before

    shutil.rmtree(out / "tensorboard")
    shutil.rmtree(out / "best")
    before = tree(out)
    result = invoke(args(tiny_gemma, pairs, out, "--overwrite"))
    assert result.exit_code == 0, result.output
    after = tree(out)
    for name in before:  # every file of the user's is still there, unchanged
        assert after[name] == before[name], name
    assert {p.split("/")[0] for p in after} <= set(OUTPUTS) | {"notes.txt", "data", MARKER}
    assert json.loads((out / MARKER).read_text())["outputs"] == sorted(OUTPUTS)


def test_a_fresh_start_deletes_only_what_the_marker_lists(
    finished_run, tiny_gemma, pairs, tmp_path
):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "notes.txt").write_text("mine")
    (out / "tensorboard" / "mine.txt").write_text("a file the marker does not cover")
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(
        json.dumps(
            {
                **marker,
                "outputs": [n for n in marker["outputs"] if n != "tensorboard"] + ["../outside"],
            }
        )
    )
    (tmp_path / "outside").write_text("not below the run directory")
    result = invoke(args(tiny_gemma, pairs, out, "--no-resume", "--max-steps", "2"))
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "tensorboard" / "mine.txt").exists()  # not listed: kept
    assert (tmp_path / "outside").exists()  # a name outside the run dir is ignored
    steps = [
        json.loads(line)["step"] for line in (out / "metrics.jsonl").open() if "epoch" not in line
    ]
    assert steps == [1, 2]  # the old run's lines were deleted


HOLD = textwrap.dedent("""
    import os, signal, sys, time
    from keras_ft.train.rundir import RunLock
    lock = RunLock(sys.argv[1])
    lock.acquire()
    print("locked", flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)
""")


def hold_lock(run_dir, how):
    run_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir), how], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_in_a_locked_directory_fails_naming_the_holder(tiny_gemma, pairs, tmp_path):
    out = tmp_path / "run"
    holder = hold_lock(out, "hold")
    try:
        held = json.loads((out / LOCK).read_text())
        output = refused(
            invoke(args(tiny_gemma, pairs, out)),
            "in use by another run",
            f"pid {holder.pid}",
            f"host {socket.gethostname()}",
            f"started {held['started']}",
        )
        assert str(out) in output
        assert sorted(os.listdir(out)) == [LOCK]  # nothing written
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_run_is_taken_over(tiny_gemma, pairs, tmp_path, caplog):
    out = tmp_path / "run"
    killed = hold_lock(out, "kill")
    assert killed.wait() == -signal.SIGKILL
    assert json.loads((out / LOCK).read_text())["pid"] == killed.pid  # left behind
    with caplog.at_level(logging.WARNING, logger="keras_ft.train.rundir"):
        result = invoke(args(tiny_gemma, pairs, out))
    assert result.exit_code == 0, result.output
    assert f"Taking over the stale lock {out / LOCK}" in caplog.text
    assert f"pid {killed.pid}" in caplog.text
    assert not (out / LOCK).exists()  # released at the end
    assert (out / "adapter.lora.h5").exists()


def test_the_lock_is_exclusive_within_one_process(tmp_path):
    first, second = RunLock(tmp_path), RunLock(tmp_path)
    first.acquire()
    with pytest.raises(ValueError, match=f"pid {os.getpid()}"):
        second.acquire()
    first.release()
    second.acquire()  # free again
    second.release()
    assert not (tmp_path / LOCK).exists()


def read_only(path):
    """Makes directory `path` refuse writes, also for root (chmod does not stop root)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o555)
    return lambda: path.chmod(0o755)


@pytest.mark.parametrize("case", ["is_a_file", "below_a_file", "read_only"])
def test_an_unwritable_output_dir_is_named_before_data_or_model_load(case, tmp_path):
    missing = tmp_path / "no-such-data.jsonl"  # read first, it would fail on this
    target = tmp_path / "out"
    undo = lambda: None
    if case == "is_a_file":
        target.write_text("a file")
    elif case == "below_a_file":
        (tmp_path / "file").write_text("a file")
        target = tmp_path / "file" / "run"
    else:
        target.mkdir()
        undo = read_only(target)
    try:
        output = refused(
            invoke(args(tmp_path / "no-such-preset", missing, target)), "`output_dir`", str(target)
        )
        assert {
            "is_a_file": "is a file, not a directory",
            "below_a_file": f"{tmp_path / 'file'} is a file",
            "read_only": "is not writable",
        }[case] in output
    finally:
        undo()
    if case == "read_only":
        assert os.listdir(target) == []


@pytest.mark.parametrize("case", ["below_a_file", "read_only"])
def test_an_unwritable_token_cache_dir_is_named(case, tmp_path):
    undo = lambda: None
    if case == "below_a_file":
        (tmp_path / "file").write_text("a file")
        cache = tmp_path / "file" / "tokens"
    else:
        cache = tmp_path / "tokens"
        cache.mkdir()
        undo = read_only(cache)
    try:
        argv = args(tmp_path / "no-such-preset", tmp_path / "none.jsonl", tmp_path / "run")
        refused(
            invoke(argv[:-2] + ["--tokenized-cache-dir", cache]),
            "`tokenized_cache_dir`",
            str(cache),
        )
    finally:
        undo()
    assert not (tmp_path / "run").exists()  # the run directory was not created


def test_data_stats_checks_its_plot_path_before_reading(pairs, tmp_path):
    (tmp_path / "file").write_text("a file")
    plot = tmp_path / "file" / "stats.png"
    result = CliRunner().invoke(
        data_main, ["stats", "--data", str(pairs), "--no-tokens", "--plot", str(plot)]
    )
    assert result.exit_code == 2
    err = result.stderr
    assert "`--plot`" in err and f"{tmp_path / 'file'} is a file" in err
