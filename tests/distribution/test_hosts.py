"""Multi-host behaviour that needs no second process: each host's rows of a
global batch, and what a process that is not the writer leaves unwritten.

(The two-process run itself is in test_mesh_runs.py.)
"""

import json

import numpy as np
import pytest
from helpers import synthetic_examples

from keras_ft.config import Config
from keras_ft.data.batches import BatchSequence
from keras_ft.data.tokenizer import TokenizedExample
from keras_ft.distribution import mesh
from keras_ft.distribution.mesh import DataShard
from keras_ft.train import callbacks, checkpoint, rundir
from keras_ft.train.checkpoint import Checkpoints, TrainState


def _examples(n=11):
    # rows of different lengths, so the bucket a batch pads to depends on its rows
    return [
        TokenizedExample(e.token_ids[: 4 + i], e.loss_mask[: 4 + i], 4 + i)
        for i, e in enumerate(synthetic_examples(n, length=16))
    ]


@pytest.mark.parametrize("packing", [False, True])
def test_each_host_serves_its_rows_of_the_same_global_batch(packing):
    examples = _examples()
    whole = BatchSequence(examples, 4, 32, 0, seed=3, packing=packing, shard=DataShard(0, 1))
    parts = [
        BatchSequence(examples, 4, 32, 0, seed=3, packing=packing, shard=DataShard(i, 2))
        for i in range(2)
    ]
    for epoch in (0, 1):
        for s in (whole, *parts):
            s.set_span(epoch)
        for b in range(len(whole)):
            x = whole[b]
            halves = [p[b] for p in parts]
            assert len(x["token_ids"]) == 4  # every batch is full: the last one padded
            for key in x:  # host 0 has rows 0-1, host 1 rows 2-3, padded alike
                np.testing.assert_array_equal(
                    np.concatenate([h[key] for h in halves]), x[key], err_msg=key
                )
            # the order is (seed, epoch)'s, the same on every host
            np.testing.assert_array_equal(parts[1].batch_indices(b), whole.batch_indices(b))


def test_a_short_last_batch_is_filled_with_rows_that_bear_no_loss():
    examples = _examples(10)
    plain = BatchSequence(examples, 4, 32, 0, seed=3)
    sharded = BatchSequence(examples, 4, 32, 0, seed=3, shard=DataShard(0, 1))
    last = len(plain) - 1
    assert len(plain[last]["token_ids"]) == 2 and len(sharded[last]["token_ids"]) == 4
    x = sharded[last]
    assert not x["loss_weights"][2:].any() and not x["padding_mask"][2:].any()
    width = plain[last]["token_ids"].shape[1]
    for key in x:
        np.testing.assert_array_equal(x[key][:2, :width], plain[last][key])


def test_a_batch_that_does_not_split_over_the_hosts_is_refused():
    with pytest.raises(ValueError, match="`batch_size` 3 must be a multiple of 2"):
        BatchSequence(_examples(), 3, 32, 0, seed=3, shard=DataShard(1, 2))


class _Trainer:
    """Enough of a trainer for `Checkpoints.save` (no optimizer, no LoRA)."""

    def __init__(self):
        self.synced = 0

    def jax_state_sync(self):
        self.synced += 1


@pytest.fixture
def not_the_writer(monkeypatch):
    monkeypatch.setattr(mesh, "is_writer", lambda: False)


def test_a_process_that_is_not_the_writer_writes_nothing(not_the_writer, tmp_path):
    run_dir = tmp_path / "run"
    cfg = Config(output_dir=str(run_dir))
    with rundir.RunDir.open(cfg) as run:  # no lock taken, nothing created
        assert run.lock is None
        rundir.accept(run_dir, cfg, fresh=True)  # no marker, no config.json
        trainer = _Trainer()
        path = Checkpoints(run_dir / "checkpoints", 2).save(trainer, TrainState(4), cfg, {})
        assert trainer.synced == 1 and path.name == "step-00000004"  # synced, not written
        state = TrainState(batches_done=1)
        callbacks.JsonlLogger(
            run_dir / "metrics.jsonl", state, callbacks.StepTracker(state, None, lambda s: 0.0)
        ).on_epoch_end(0, {"loss": 1.0})
        callbacks.TensorBoardLogger(run_dir / "tensorboard", state).on_train_batch_end(
            0, {"step_loss": 1.0}
        )
        assert (
            callbacks.plot_loss_curve(run_dir / "metrics.jsonl", run_dir / "loss_curve.png") is None
        )
    assert not run_dir.exists()


def test_the_writer_writes_what_the_others_do_not(tmp_path):
    # The same calls as above, by the writer (one process): everything is there.
    run_dir = tmp_path / "run"
    cfg = Config(output_dir=str(run_dir))
    with rundir.RunDir.open(cfg) as run:
        assert run.lock is not None
        rundir.accept(run_dir, cfg, fresh=True)
        state = TrainState(batches_done=1)
        callbacks.JsonlLogger(
            run_dir / "metrics.jsonl", state, callbacks.StepTracker(state, None, lambda s: 0.0)
        ).on_epoch_end(0, {"loss": 1.0})
    assert (run_dir / "config.json").exists() and (run_dir / rundir.MARKER).exists()
    assert json.loads((run_dir / "metrics.jsonl").read_text())["loss"] == 1.0


def test_the_mesh_and_the_hosts_may_change_between_a_run_and_its_resumption():
    for field in ("mesh", "coordinator_address", "num_processes", "process_id"):
        assert field in checkpoint.RESUME_FREE_FIELDS
