"""Training checkpoints: written atomically, verified on load, the newest K kept.

A checkpoint is a directory `checkpoints/step-00000050/` holding:

- `adapter.lora.h5` + `adapter_config.json`: the LoRA weights, loadable on
  their own with `model.load_adapter`;
- `trainer_state.npz`: every optimizer variable (moments, iteration counter,
  gradient accumulators) and the seed-generator states;
- `state.json`: the `TrainState` (data position, early-stopping bookkeeping)
  and the run's config. The batch order is a pure function of (seed, epoch),
  so the position (epoch, batch) is all the shuffle state there is;
- `manifest.json`, written last: the SHA-256 of every other file.

Files are written into a hidden temporary directory, fsynced, and the
directory is renamed into place with `os.replace`, so a crash mid-write leaves
only a temporary directory (ignored, then deleted). Loading re-checks the
manifest and falls back to the previous checkpoint if anything is off.

Arrays are saved as host numpy copies (whatever the mesh placed them on) and
restored by assigning into the variables, which carry the current run's
layouts: a checkpoint written under one mesh resumes under another, or on one
device. In a multi-host run only the writer (`mesh.is_writer()`, process 0)
writes or deletes checkpoints; every process reads the same one to resume
(`output_dir` on storage the hosts share).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from keras_ft.config import Config
from keras_ft.distribution import mesh
from keras_ft.files import fsync_path, replace_dir, sha256_file, write_text
from keras_ft.model.lora import ADAPTER_FILE, save_adapter

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the checkpoint layout changes
STATE_FILE = "state.json"
ARRAYS_FILE = "trainer_state.npz"
MANIFEST_FILE = "manifest.json"
TMP_PREFIX = ".tmp-"
# Config fields that may change between a run and its resumption: they do not
# touch the weights, the data order or the learning-rate schedule.
RESUME_FREE_FIELDS = frozenset(
    {
        "resume",
        "output_dir",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "eval_every_steps",
        "early_stopping_patience",
        "sample_every_steps",
        "sample_prompts",
        "sampler",
        "top_k",
        "top_p",
        "temperature",
        "max_new_tokens",
        "show_examples",
        "tokenized_cache_dir",
        "compile_cache_dir",
        "overwrite",
        # Where it runs: the same global batches in the same order, on any mesh.
        "mesh",
        "coordinator_address",
        "num_processes",
        "process_id",
    }
)


NON_FINITE_LOSS = "non_finite_loss"  # TrainState.stop_reason of a NaN/Inf loss


@dataclasses.dataclass
class TrainState:
    """Where a run is; everything besides the weights that resuming needs."""

    batches_done: int = 0  # batches consumed since the start: the data position
    accumulation: int = 1  # batches per optimizer step
    best_loss: float | None = None  # best periodic validation loss so far
    evals_since_best: int = 0  # evaluations without a new best (early stopping)
    stop_reason: str = ""  # "", "early_stopping" or NON_FINITE_LOSS

    @property
    def step(self) -> int:
        """Optimizer steps completed."""
        return self.batches_done // self.accumulation

    @property
    def at_step_end(self) -> bool:
        """True when the last batch completed an optimizer step."""
        return self.batches_done % self.accumulation == 0


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed with this config or data."""


class Checkpoints:
    """The checkpoints of one run directory."""

    def __init__(self, directory: str | Path, keep: int):
        self.directory = Path(directory)
        self.keep = keep

    def all(self) -> list[Path]:
        """Finished checkpoint directories, oldest first (unverified)."""
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.glob("step-*") if p.is_dir())

    def latest(self) -> Path | None:
        """The newest checkpoint that passes verification, or None."""
        for path in reversed(self.all()):
            problem = verify(path)
            if problem is None:
                return path
            log.warning("Skipping checkpoint %s: %s", path, problem)
        return None

    def save(self, trainer, state: TrainState, cfg: Config, data: dict) -> Path:
        """Writes a checkpoint of `trainer` at `state`; prunes to the newest K.

        Args:
            trainer: the `CausalLMTrainer` (LoRA weights and optimizer).
            state: the position and bookkeeping to resume from.
            cfg: the run's config, checked against the resuming run's.
            data: the training data's shape, e.g. {"num_examples",
                "batches_per_epoch"} and optionally "fingerprint" ({spec:
                hash}), also checked on resume (`check_same_data`).

        Returns:
            The checkpoint directory (not written by a process that is not
            the writer).
        """
        final = self.directory / f"step-{state.step:08d}"
        if hasattr(trainer, "jax_state_sync"):
            trainer.jax_state_sync()  # fit keeps the newest values in its JAX state
        if not mesh.is_writer():
            return final
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_temporaries()
        tmp = self.directory / f"{TMP_PREFIX}{final.name}"
        tmp.mkdir()
        save_adapter(trainer, tmp, cfg)  # uses only `trainer.backbone`
        np.savez(tmp / ARRAYS_FILE, **trainer_arrays(trainer))
        record = {
            "format": FORMAT,
            "state": dataclasses.asdict(state),
            "data": data,
            "config": _plain_config(cfg),
        }
        (tmp / STATE_FILE).write_text(json.dumps(record, indent=2) + "\n")
        files = sorted(p.name for p in tmp.iterdir())
        manifest = {
            "format": FORMAT,
            "step": state.step,
            "files": {name: sha256_file(tmp / name) for name in files},
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        for path in tmp.iterdir():
            fsync_path(path)
        fsync_path(tmp)
        replace_dir(tmp, final)  # the same step again: the end of an early stop
        fsync_path(self.directory)
        for stale in self.all()[: -self.keep]:
            shutil.rmtree(stale)
        return final

    def clear(self) -> None:
        if mesh.is_writer() and self.directory.exists():
            shutil.rmtree(self.directory)

    def _remove_temporaries(self) -> None:
        # Ours, and a replaced checkpoint that `replace_dir` had moved aside.
        for pattern in (TMP_PREFIX + "*", ".step-*.old.*"):
            for path in self.directory.glob(pattern):
                shutil.rmtree(path, ignore_errors=True)


def truncate_jsonl(path: str | Path, last_step: int) -> None:
    """Drops the lines logged after `last_step` (by a run that was cut off)."""
    path = Path(path)
    if not mesh.is_writer() or not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:  # a line cut off by the crash
            continue
    write_text(path, "".join(kept))


def verify(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be trusted, or None if it can."""
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        return "no manifest (the write did not finish)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        return f"unreadable manifest ({e})"
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')!r}, expected {FORMAT}"
    for name, digest in manifest["files"].items():
        if not (path / name).is_file():
            return f"{name} is missing"
        if sha256_file(path / name) != digest:
            return f"{name} does not match its checksum"
    return None


def trainer_arrays(trainer) -> dict[str, np.ndarray]:
    """Optimizer variables and seed-generator states, keyed by position/path."""
    arrays = {
        f"optimizer/{i:05d}": np.asarray(v.value) for i, v in enumerate(trainer.optimizer.variables)
    }
    arrays.update({f"seed/{v.path}": np.asarray(v.value) for v in _seed_variables(trainer)})
    return arrays


def restore(path: Path, trainer, cfg: Config, data: dict) -> TrainState:
    """Loads a checkpoint into `trainer` (LoRA weights, optimizer, seeds).

    Raises:
        CheckpointError: the checkpoint was written by a run with different
            training settings or data, so resuming would not continue it.
    """
    record = read_state(path)
    check_resumable(record["config"], cfg, path)
    check_same_data(record["data"], data, path)
    state = TrainState(**record["state"])
    trainer.backbone.load_lora_weights(str(path / ADAPTER_FILE))
    optimizer = trainer.optimizer
    if not optimizer.built:
        optimizer.build(trainer.trainable_variables)
    with np.load(path / ARRAYS_FILE) as arrays:
        saved = sorted(k for k in arrays.files if k.startswith("optimizer/"))
        if len(saved) != len(optimizer.variables):
            raise CheckpointError(
                f"Checkpoint {path} holds {len(saved)} optimizer variables; this "
                f"optimizer has {len(optimizer.variables)}. The model or optimizer "
                "settings differ from the run that wrote it."
            )
        for key, variable in zip(saved, optimizer.variables):
            variable.assign(arrays[key])
        for variable in _seed_variables(trainer):
            if f"seed/{variable.path}" in arrays.files:
                variable.assign(arrays[f"seed/{variable.path}"])
    return state


def read_state(path: Path) -> dict:
    """The `state.json` record of checkpoint `path`: state, data and config."""
    return json.loads((Path(path) / STATE_FILE).read_text())


def check_resumable(saved: dict, cfg: Config, path: Path) -> None:
    """Refuses to resume under settings that would change the trajectory.

    A field the checkpoint's config lacks was added to `Config` after it was
    written: that run behaved as the field's default, so only a non-default
    value now is a change (a checkpoint from an older keras_ft resumes).
    """
    current = _plain_config(cfg)
    saved = {**_plain_config(Config()), **saved}
    changed = sorted(
        k
        for k in set(saved) | set(current)
        if k not in RESUME_FREE_FIELDS and saved.get(k) != current.get(k)
    )
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise CheckpointError(
            f"Cannot resume from {path}: it was written with different settings "
            f"({diffs}). Resume with the same settings, or start over with "
            "--no-resume (deletes the checkpoints) or another --output-dir."
        )


def check_same_data(saved: dict, current: dict, path: Path) -> None:
    """Refuses to resume on other data: an edited file, or other counts.

    `fingerprint` ({spec: hash}, `data.data_fingerprint`) catches an edit
    that keeps the row count; it is compared only when both runs recorded
    one (a checkpoint from before fingerprints, or `train` called without
    one, is checked by its counts alone).
    """
    then, now = saved.get("fingerprint"), current.get("fingerprint")
    if then is not None and now is not None and then != now:
        # The specs themselves are config (`check_resumable`); here their contents.
        what = "; ".join(
            f"{spec} was edited (fingerprint {then.get(spec)} -> {now.get(spec)})"
            for spec in sorted(set(then) | set(now))
            if then.get(spec) != now.get(spec)
        )
        raise CheckpointError(
            f"Cannot resume from {path}: the training data changed since it was "
            f"written: {what}. Restore the data, or start over with --no-resume "
            "(deletes the checkpoints) or another --output-dir."
        )
    counts = lambda d: {k: v for k, v in d.items() if k != "fingerprint"}
    if counts(saved) != counts(current):
        raise CheckpointError(
            f"Cannot resume from {path}: the training data changed (then "
            f"{counts(saved)}, now {counts(current)}). Restore the data, or start over "
            "with --no-resume or another --output-dir."
        )


def _seed_variables(trainer) -> list:
    return [v for v in trainer.non_trainable_variables if "seed_generator" in v.path]


def _plain_config(cfg: Config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
