"""Data specs -> Examples -> a seeded train/validation split.

`plan_split(cfg)` streams every `cfg.data` spec (mixed by `data_weights`),
drops records with a context if asked, keeps the first `num_examples`, and
decides a seeded shuffle and the `validation_fraction` split (or reads
`validation_data`), keeping only a hash per example; validation never
overlaps training. `load_examples(cfg)` returns that split in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from keras_ft.config import Config
from keras_ft.data.records import (
    DataError,
    FieldMapping,
    LoadReport,
    RecordFilter,
    iter_examples,
)
from keras_ft.data.sources import interleave, parse_spec
from keras_ft.files import write_text
from keras_ft.templates import Example

log = logging.getLogger(__name__)


DATA_OPTIONS = (
    "data",
    "data_weights",
    "validation_data",
    "validation_fraction",
    "drop_with_context",
    "keep_matching",
    "num_examples",
    "shuffle",
    "seed",
    "fields",
    "skip_bad_records",
    "template",
    "completion_only_loss",
    "sequence_length",
)


def check_data_config(cfg: Config) -> FieldMapping | None:
    """Validates the data options; returns the parsed field mapping.

    Raises:
        ValueError: naming the config field and the value received.
    """
    if cfg.data_weights and len(cfg.data_weights) != len(cfg.data):
        raise ValueError(
            f"`data_weights` must give one weight per `data` spec ({len(cfg.data)}). "
            f"Received: data_weights={cfg.data_weights!r} for data={cfg.data!r}"
        )
    if any(w <= 0 for w in cfg.data_weights):
        raise ValueError(
            f"`data_weights` must all be positive. Received: data_weights={cfg.data_weights!r}"
        )
    return FieldMapping.parse(cfg.fields) if cfg.fields else None


def stream_examples(
    cfg: Config, specs: Sequence[str], report: LoadReport, weights: Sequence[float] = ()
) -> Iterator[Example]:
    """Examples of several specs, chained or mixed by weights, lazily.

    Args:
        cfg: data options (fields, skip_bad_records, drop_with_context,
            keep_matching, seed).
        specs: data specs; see `sources`.
        report: counts, updated in place as examples are read.
        weights: one per spec to interleave by; empty chains them in order.
    """
    mapping = check_data_config(cfg)
    keep = RecordFilter.parse(cfg.keep_matching) if cfg.keep_matching else None
    exhausted: list[str] = []

    def stream(spec: str) -> Iterator[Example]:
        yield from iter_examples(
            parse_spec(spec).records(mapping),
            report,
            mapping=mapping,
            skip_bad_records=cfg.skip_bad_records,
            drop_with_context=cfg.drop_with_context,
            keep=keep,
            source=spec,
        )
        exhausted.append(spec)

    streams = [stream(spec) for spec in specs]
    if not weights or len(streams) == 1:
        yield from itertools.chain(*streams)
        return
    for _, example in interleave(streams, weights, cfg.seed):
        yield example
    if exhausted:
        report.notes.append(
            f"the mixture stopped when {exhausted[0]} ran out, to keep "
            f"the weights; examples per source: {dict(report.sources)}"
        )


def read_data(cfg: Config, report: LoadReport) -> Iterator[Example]:
    """The examples of `cfg.data` (mixed by weights), the first `num_examples`."""
    examples = stream_examples(cfg, cfg.data, report, cfg.data_weights)
    return itertools.islice(examples, cfg.num_examples) if cfg.num_examples else examples


@dataclasses.dataclass
class SplitPlan:
    """Which examples of the data stream go to training and validation.

    Indices count examples in the order `stream_examples` yields them (after
    `num_examples`); validation indices count the `validation_data` stream
    when that is set. Training indices are in shuffled order.
    """

    train: np.ndarray  # int64 indices into the data stream
    validation: np.ndarray  # into the data stream, or the validation_data stream
    validation_is_separate: bool
    train_keys: np.ndarray  # uint64 example_hash of each training example
    report: LoadReport


def plan_split(cfg: Config, visit: Callable[[str, Example], None] | None = None) -> SplitPlan:
    """Streams the data once and decides the seeded shuffle and split.

    Only an 8-byte hash per example is kept, so data larger than memory can
    be split; `visit(stream, example)` sees every example as it is read
    ("data" or "validation_data" stream), e.g. to tokenize it to disk.

    Raises:
        DataError: a bad record (unless `skip_bad_records`), no usable
            examples, or a split that would be empty.
        ValueError: inconsistent data options.
    """
    report = LoadReport()

    def hashes(stream_name: str, examples: Iterable[Example]) -> np.ndarray:
        keys = []
        for example in examples:
            keys.append(example_hash(example))
            if visit:
                visit(stream_name, example)
        return np.asarray(keys, np.uint64)

    keys = hashes("data", read_data(cfg, report))
    if cfg.num_examples and len(keys) == cfg.num_examples:
        report.notes.append(
            f"kept the first num_examples={cfg.num_examples} examples; later records were not read"
        )
    if not len(keys):
        raise DataError(
            f"hold no usable examples.\n{report.summary()}",
            location=", ".join(cfg.data),
            reason="no_examples",
        )
    order = (
        np.random.default_rng(cfg.seed).permutation(len(keys))
        if cfg.shuffle
        else np.arange(len(keys))
    )
    if cfg.validation_data:
        val_report = LoadReport()
        val_keys = hashes(
            "validation_data", stream_examples(cfg, (cfg.validation_data,), val_report)
        )
        report.notes.append(f"validation data: {val_report.summary()}")
        if not len(val_keys):
            raise DataError(
                "holds no usable examples.",
                location=cfg.validation_data,
                field="validation_data",
                reason="no_examples",
            )
        train, validation = order, np.arange(len(val_keys))
    else:
        count = validation_count(len(keys), cfg.validation_fraction)
        train, validation = order[: len(keys) - count], order[len(keys) - count :]
        val_keys = keys[validation]
    overlap = np.isin(keys[train], val_keys)
    train = train[~overlap]
    report.num_overlap_removed = int(overlap.sum())
    if not len(train):
        raise DataError(
            "no training examples are left: every one equals a validation example.",
            field="validation_data",
            reason="empty_split",
        )
    report.num_train, report.num_validation = len(train), len(validation)
    log.info("%s", report.summary())
    return SplitPlan(
        train.astype(np.int64),
        validation.astype(np.int64),
        bool(cfg.validation_data),
        keys[train],
        report,
    )


def load_examples(cfg: Config) -> tuple[list[Example], list[Example], LoadReport]:
    """Reads, filters, shuffles and splits the data of `cfg`, in memory.

    Returns:
        (training examples, validation examples, report). Validation is
        empty when `validation_fraction` is 0 and no `validation_data` is set.
        The split is `plan_split`'s.

    Raises:
        DataError, ValueError: as `plan_split`.
    """
    read: dict[str, list[Example]] = {"data": [], "validation_data": []}
    plan = plan_split(cfg, lambda stream, example: read[stream].append(example))
    held_out = read["validation_data" if plan.validation_is_separate else "data"]
    return (
        [read["data"][i] for i in plan.train],
        [held_out[i] for i in plan.validation],
        plan.report,
    )


def validation_count(num_examples: int, fraction: float) -> int:
    """How many of `num_examples` a `fraction` holds out (rounded).

    Raises:
        DataError: naming `validation_fraction` when a split would be empty.
    """
    if fraction == 0:
        return 0
    count = int(num_examples * fraction + 0.5)
    if count == 0:
        need = int(np.ceil(0.5 / fraction))
        raise DataError(
            f"= {fraction} of {num_examples} examples leaves the validation split "
            f"empty. Use at least {need} examples, pass --validation-data, or set "
            "--validation-fraction 0.",
            field="validation_fraction",
            reason="empty_split",
        )
    if count >= num_examples:
        raise DataError(
            f"= {fraction} of {num_examples} examples leaves no training "
            "examples. Lower it or add data.",
            field="validation_fraction",
            reason="empty_split",
        )
    return count


def example_key(example: Example) -> tuple:
    """What makes two examples the same (their messages, not their source)."""
    return tuple((m.role, m.content) for m in example.messages)


def example_hash(example: Example) -> int:
    """`example_key` as a 64-bit hash, stable across processes."""
    digest = hashlib.blake2b(
        repr(example_key(example)).encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little")


def example_record(example: Example) -> dict:
    """`example` as a record keras_ft reads back into an equal Example.

    A single-turn labelled example is `{"prompt", "label"}` (classification);
    anything else is chat `messages`. `source` says where it was read.
    """
    system = [m.content for m in example.messages if m.role == "system"]
    turns = [m for m in example.messages if m.role != "system"]
    if example.label is not None and [m.role for m in turns] == ["user", "assistant"]:
        record = {"prompt": turns[0].content, "label": example.label, "source": example.source}
        return {**record, "system": system[0]} if system else record
    return {
        "messages": [{"role": m.role, "content": m.content} for m in example.messages],
        "source": example.source,
    }


def write_split(cfg: Config, out_dir) -> dict:
    """Writes `cfg`'s train/validation split as `train.jsonl` and `validation.jsonl`.

    The files hold exactly the examples training and validation get (the
    same filters, `num_examples`, seeded shuffle and split), in that order,
    so a hyper-parameter search can split the training file again and never
    see the validation examples. Each file is written atomically.

    Returns:
        {"train": path, "validation": path, "num_train", "num_validation"}.
    """
    train, validation, _ = load_examples(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, examples in (("train", train), ("validation", validation)):
        paths[name] = out_dir / f"{name}.jsonl"
        lines = (json.dumps(example_record(e), ensure_ascii=False) + "\n" for e in examples)
        write_text(paths[name], "".join(lines))
    return {**paths, "num_train": len(train), "num_validation": len(validation)}
