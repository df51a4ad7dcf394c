"""The held-out examples an evaluation scores: a file, or the run's own split."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np

from keras_ft.config import Config
from keras_ft.data.records import LoadReport
from keras_ft.data.split import example_hash, plan_split, read_data, stream_examples
from keras_ft.templates import Example

log = logging.getLogger(__name__)


@dataclasses.dataclass
class HeldOut:
    """The examples both models are scored on, and where they came from."""

    examples: list[Example]
    source: str  # "validation split of <run>" or the data spec
    num_overlap_removed: int = 0  # examples equal to a training example
    labels: list[str] = dataclasses.field(default_factory=list)  # label set
    label_source: str = ""
    # The label a majority-class baseline always answers: the most frequent
    # one where the label set came from (ties: the first by name).
    majority_label: str = ""


def load_heldout(
    cfg: Config,
    data: str | None = None,
    skip: int = 0,
    limit: int = 0,
    run_cfg: Config | None = None,
) -> HeldOut:
    """The held-out examples: a data spec, or else the run's validation split.

    Args:
        cfg: data options (fields, drop_with_context, template...).
        data: a held-out file/spec; None takes `run_cfg`'s validation split,
            recomputed exactly as training split it (same seed and options).
        skip: skip this many usable examples of `data` first (e.g. the
            `num_examples` a run read from the same file).
        limit: keep at most this many examples (0 keeps all).
        run_cfg: the training run's config; its training examples are
            removed from the held-out set (counted) and the labels it read
            are the label set.
    """
    train_keys, report = np.zeros(0, np.uint64), None
    if run_cfg is not None:
        plan = plan_split(run_cfg)  # hashes only: the run's data may not fit in memory
        train_keys, report = plan.train_keys, plan.report
    if data:
        eval_report = LoadReport()
        stream = stream_examples(cfg, (data,), eval_report)
        examples = list(itertools.islice(stream, skip, skip + limit if limit else None))
        source = f"{data} (examples {skip + 1}-{skip + len(examples)})"
    elif run_cfg is not None:
        examples = validation_examples(run_cfg, plan, limit)
        source = f"validation split of {', '.join(run_cfg.data)} (seed {run_cfg.seed})"
    else:
        raise ValueError(
            "No held-out data: pass --data, or an adapter inside a run "
            "directory (its validation split is used)."
        )
    in_train = np.isin(np.asarray([example_hash(e) for e in examples], np.uint64), train_keys)
    kept = [e for e, seen in zip(examples, in_train) if not seen]
    if len(kept) < len(examples):
        log.warning(
            "Removed %d held-out examples that are also training examples.",
            len(examples) - len(kept),
        )
    if not kept:
        raise ValueError(f"No held-out examples left in {source}.")
    # The label set is what the run read (both splits), else the held-out data's.
    counts = dict(report.labels) if report else {}
    label_source = "run's data"
    if not counts:
        counts = collections.Counter(e.label for e in kept if e.label is not None)
        label_source = "held-out data" if counts else ""
    labels = sorted(counts)
    majority = min(labels, key=lambda label: (-counts[label], label)) if labels else ""
    return HeldOut(kept, source, len(examples) - len(kept), labels, label_source, majority)


def validation_examples(run_cfg: Config, plan, limit: int = 0) -> list[Example]:
    """The first `limit` (0 = all) validation examples of `plan`, read again."""
    wanted = plan.validation[:limit] if limit else plan.validation
    stream = (
        stream_examples(run_cfg, (run_cfg.validation_data,), LoadReport())
        if plan.validation_is_separate
        else read_data(run_cfg, LoadReport())
    )
    position = {int(index): rank for rank, index in enumerate(wanted)}
    picked: list = [None] * len(wanted)
    for index, example in enumerate(stream):
        if index in position:
            picked[position[index]] = example
    return picked
