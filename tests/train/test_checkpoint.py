import dataclasses
import json
import logging
import shutil

import keras
import numpy as np
import pytest
from helpers import synthetic_examples

from keras_ft.config import Config
from keras_ft.data.batches import BatchSequence
from keras_ft.model.causal_lm import build_model
from keras_ft.train.checkpoint import (
    CheckpointError,
    Checkpoints,
    TrainState,
    check_resumable,
    read_state,
    restore,
    verify,
)
from keras_ft.train.loop import train
from keras_ft.train.rundir import MARKER, RunDirError, resume_or_start
from keras_ft.train.trainer import build_trainer

EXAMPLES = synthetic_examples(6)
DATA = {"num_examples": 6, "batches_per_epoch": 3}  # 6 examples in batches of 2


def make_trainer(cfg):
    keras.utils.set_random_seed(cfg.seed)
    trainer = build_trainer(cfg, build_model(cfg).backbone, cfg.max_steps)
    return trainer, BatchSequence(EXAMPLES, cfg.batch_size, 16, 0, cfg.seed)


@pytest.fixture(scope="module")
def trained(tiny_gemma, tmp_path_factory):
    """A run of 3 steps, checkpointed every step, keeping the newest 2."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = Config(
        preset=str(tiny_gemma),
        output_dir=str(run_dir),
        batch_size=2,
        max_steps=3,
        learning_rate=1e-2,
        checkpoint_every_steps=1,
        keep_checkpoints=2,
        lora_targets="all",
    )
    trainer, data = make_trainer(cfg)
    train(cfg, trainer, data, None, run_dir)
    return cfg, trainer, run_dir


def test_keeps_the_newest_k_and_restores_weights_optimizer_and_position(trained):
    cfg, trainer, run_dir = trained
    checkpoints = Checkpoints(run_dir / "checkpoints", cfg.keep_checkpoints)
    assert [p.name for p in checkpoints.all()] == ["step-00000002", "step-00000003"]
    fresh, data = make_trainer(dataclasses.replace(cfg, seed=1))  # other LoRA init
    state = restore(checkpoints.latest(), fresh, cfg, DATA)
    assert (state.batches_done, state.step) == (3, 3)
    for a, b in zip(trainer.backbone.trainable_weights, fresh.backbone.trainable_weights):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
    assert len(fresh.optimizer.variables) == len(trainer.optimizer.variables) > 4
    for a, b in zip(trainer.optimizer.variables, fresh.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a.value), np.asarray(b.value))
    saved = json.loads((checkpoints.latest() / "state.json").read_text())
    assert saved["config"]["learning_rate"] == 1e-2 and saved["data"]["batches_per_epoch"] == 3


def test_saving_the_same_step_again_replaces_it_and_leaves_nothing_aside(trained, tmp_path):
    cfg, trainer, _ = trained
    checkpoints = Checkpoints(tmp_path / "checkpoints", 2)
    first = checkpoints.save(trainer, TrainState(batches_done=3), cfg, DATA)
    again = checkpoints.save(trainer, TrainState(batches_done=3, best_loss=1.5), cfg, DATA)
    assert first == again and verify(again) is None
    assert json.loads((again / "state.json").read_text())["state"]["best_loss"] == 1.5
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["step-00000003"]


def test_a_torn_or_corrupted_checkpoint_is_never_loaded(trained, tmp_path, caplog):
    cfg, trainer, run_dir = trained
    shutil.copytree(run_dir / "checkpoints", tmp_path / "checkpoints")
    checkpoints = Checkpoints(tmp_path / "checkpoints", keep=5)
    newest = tmp_path / "checkpoints/step-00000003"
    # A crash mid-write leaves a temporary directory: never a checkpoint.
    torn = tmp_path / "checkpoints/.tmp-step-00000004"
    shutil.copytree(newest, torn)
    (torn / "manifest.json").unlink()
    # Bit rot (or a copy cut short) in the newest one: its checksum fails.
    with (newest / "trainer_state.npz").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage")
    with caplog.at_level(logging.WARNING):
        assert checkpoints.latest().name == "step-00000002"
    assert "trainer_state.npz does not match its checksum" in caplog.text
    (tmp_path / "checkpoints/step-00000002/manifest.json").unlink()
    assert verify(tmp_path / "checkpoints/step-00000002").startswith("no manifest")
    assert checkpoints.latest() is None
    # The next save cleans up the temporary directory.
    checkpoints.save(trainer, TrainState(batches_done=5), cfg, {})
    assert not torn.exists() and (tmp_path / "checkpoints/step-00000005").is_dir()


def test_resuming_under_other_settings_or_data_is_refused(trained):
    cfg, trainer, run_dir = trained
    latest = Checkpoints(run_dir / "checkpoints", 2).latest()
    other, _ = make_trainer(cfg)
    with pytest.raises(CheckpointError, match=r"learning_rate: 0.01 -> 0.02.*--no-resume"):
        restore(latest, other, dataclasses.replace(cfg, learning_rate=2e-2), DATA)
    with pytest.raises(CheckpointError, match="training data changed"):
        restore(latest, other, cfg, {"num_examples": 7, "batches_per_epoch": 4})
    # Evaluation, sampling and checkpoint settings may change.
    restore(latest, other, dataclasses.replace(cfg, eval_every_steps=5, keep_checkpoints=9), DATA)


def test_a_checkpoint_from_before_a_config_field_existed_resumes_at_its_default(trained):
    cfg, _, run_dir = trained
    latest = Checkpoints(run_dir / "checkpoints", 2).latest()
    # An older keras_ft wrote no `keep_matching` (the field came later): that
    # run read every record, as the default does now.
    saved = {k: v for k, v in read_state(latest)["config"].items() if k != "keep_matching"}
    check_resumable(saved, cfg, latest)
    with pytest.raises(CheckpointError, match=r"keep_matching: '' -> 'response=x'"):
        check_resumable(saved, dataclasses.replace(cfg, keep_matching="response=x"), latest)


def test_no_resume_starts_over(trained, tmp_path):
    cfg, trainer, run_dir = trained
    shutil.copytree(run_dir, tmp_path / "run")
    assert {"checkpoints", "metrics.jsonl", "loss_curve.png"} <= {
        p.name for p in (tmp_path / "run").iterdir()
    }
    checkpoints = Checkpoints(tmp_path / "run/checkpoints", 2)
    state = resume_or_start(
        dataclasses.replace(cfg, resume=False), trainer, checkpoints, tmp_path / "run", DATA
    )
    assert state.batches_done == 0
    # checkpoints, logs, curves: gone; the accepted run's identity written
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [MARKER, "config.json"]
    assert json.loads((tmp_path / "run/config.json").read_text())["resume"] is False


def test_starting_over_in_a_folder_keras_ft_did_not_write_deletes_nothing(trained, tmp_path):
    cfg, trainer, _ = trained
    mine = tmp_path / "mine"
    (mine / "best").mkdir(parents=True)
    (mine / "best/weights.h5").write_text("the user's")
    (mine / "metrics.jsonl").write_text("the user's\n")
    checkpoints = Checkpoints(mine / "checkpoints", 2)
    with pytest.raises(RunDirError, match=r"not a keras_ft run directory.*--overwrite"):
        resume_or_start(cfg, trainer, checkpoints, mine, DATA)
    assert sorted(str(p.relative_to(mine)) for p in mine.rglob("*")) == [
        "best",
        "best/weights.h5",
        "metrics.jsonl",
    ]
    # --overwrite deletes none of them either: they sit at keras_ft's output
    # names, so it refuses, naming them.
    overwrite = dataclasses.replace(cfg, overwrite=True)
    with pytest.raises(
        RunDirError,
        match=r"already holds best, metrics.jsonl.*never "
        r"deletes files it did not write",
    ):
        resume_or_start(overwrite, trainer, checkpoints, mine, DATA)
    shutil.rmtree(mine / "best")
    (mine / "metrics.jsonl").rename(mine / "my_metrics.jsonl")
    resume_or_start(overwrite, trainer, checkpoints, mine, DATA)
    assert sorted(p.name for p in mine.iterdir()) == [MARKER, "config.json", "my_metrics.jsonl"]
    assert (mine / "my_metrics.jsonl").read_text() == "the user's\n"


def test_resume_drops_the_lines_logged_after_the_checkpoint(trained, tmp_path):
    cfg, _, run_dir = trained
    shutil.copytree(run_dir, tmp_path / "run")
    shutil.rmtree(tmp_path / "run/checkpoints/step-00000003")  # as if killed before it
    with (tmp_path / "run/metrics.jsonl").open("a") as f:
        f.write('{"step": 4, "cut off')  # a line torn by the kill
    other, _ = make_trainer(cfg)
    state = resume_or_start(
        cfg, other, Checkpoints(tmp_path / "run/checkpoints", 2), tmp_path / "run", DATA
    )
    assert state.step == 2
    steps = [json.loads(line)["step"] for line in (tmp_path / "run/metrics.jsonl").open()]
    assert steps == [1, 2]
