"""Data stage: specs -> Examples -> train/validation split -> cached tokens.

`plan_split(cfg)` streams every `cfg.data` spec (mixed by `data_weights`),
drops records with a context if asked, keeps the first `num_examples`, and
decides a seeded shuffle and the `validation_fraction` split (or reads
`validation_data`), keeping only a hash per example; validation never
overlaps training. `load_examples(cfg)` returns that split in memory.
`cache_tokenized(cfg, template, tokenizer)` tokenizes each example as it is
read, straight to disk, once: the tokens are cached keyed by the data files'
hashes, the data options, the template, the tokenizer's vocabulary and the
sequence length, so files larger than memory train from memory-mapped tokens.
`python -m keras_ft.data stats --data ...` shows what is in the data."""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from keras_ft.config import Config, load_config
from keras_ft.records import DataError, FieldMapping, LoadReport, iter_examples
from keras_ft.sources import interleave, parse_spec
from keras_ft.templates import Example, Message, Template
from keras_ft.tokens import TextTokenizer, TokenizedExample, tokenize_example

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # bump when the cache layout or tokenization changes
DATA_OPTIONS = ("data", "data_weights", "validation_data", "validation_fraction",
                "drop_with_context", "num_examples", "shuffle", "seed", "fields",
                "skip_bad_records", "template", "completion_only_loss",
                "sequence_length")


def check_data_config(cfg: Config) -> FieldMapping | None:
    """Validates the data options; returns the parsed field mapping.

    Raises:
        ValueError: naming the config field and the value received.
    """
    if cfg.data_weights and len(cfg.data_weights) != len(cfg.data):
        raise ValueError(
            f"`data_weights` must give one weight per `data` spec ({len(cfg.data)}). "
            f"Received: data_weights={cfg.data_weights!r} for data={cfg.data!r}")
    if any(w <= 0 for w in cfg.data_weights):
        raise ValueError("`data_weights` must all be positive. "
                         f"Received: data_weights={cfg.data_weights!r}")
    return FieldMapping.parse(cfg.fields) if cfg.fields else None


def stream_examples(cfg: Config, specs: Sequence[str], report: LoadReport,
                    weights: Sequence[float] = ()) -> Iterator[Example]:
    """Examples of several specs, chained or mixed by weights, lazily.

    Args:
        cfg: data options (fields, skip_bad_records, drop_with_context, seed).
        specs: data specs; see `sources`.
        report: counts, updated in place as examples are read.
        weights: one per spec to interleave by; empty chains them in order.
    """
    mapping = check_data_config(cfg)
    exhausted: list[str] = []

    def stream(spec: str) -> Iterator[Example]:
        yield from iter_examples(parse_spec(spec).records(mapping), report,
                                 mapping=mapping, skip_bad_records=cfg.skip_bad_records,
                                 drop_with_context=cfg.drop_with_context, source=spec)
        exhausted.append(spec)

    streams = [stream(spec) for spec in specs]
    if not weights or len(streams) == 1:
        yield from itertools.chain(*streams)
        return
    for _, example in interleave(streams, weights, cfg.seed):
        yield example
    if exhausted:
        report.notes.append(f"the mixture stopped when {exhausted[0]} ran out, to keep "
                            f"the weights; examples per source: {dict(report.sources)}")


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


def plan_split(cfg: Config, visit: Callable[[str, Example], None] | None = None
               ) -> SplitPlan:
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
        report.notes.append(f"kept the first num_examples={cfg.num_examples} examples; "
                            "later records were not read")
    if not len(keys):
        raise DataError(f"hold no usable examples.\n{report.summary()}",
                        location=", ".join(cfg.data), reason="no_examples")
    order = (np.random.default_rng(cfg.seed).permutation(len(keys)) if cfg.shuffle
             else np.arange(len(keys)))
    if cfg.validation_data:
        val_report = LoadReport()
        val_keys = hashes("validation_data",
                          stream_examples(cfg, (cfg.validation_data,), val_report))
        report.notes.append(f"validation data: {val_report.summary()}")
        if not len(val_keys):
            raise DataError("holds no usable examples.", location=cfg.validation_data,
                            field="validation_data", reason="no_examples")
        train, validation = order, np.arange(len(val_keys))
    else:
        count = validation_count(len(keys), cfg.validation_fraction)
        train, validation = order[:len(keys) - count], order[len(keys) - count:]
        val_keys = keys[validation]
    overlap = np.isin(keys[train], val_keys)
    train = train[~overlap]
    report.num_overlap_removed = int(overlap.sum())
    if not len(train):
        raise DataError("no training examples are left: every one equals a "
                        "validation example.", field="validation_data",
                        reason="empty_split")
    report.num_train, report.num_validation = len(train), len(validation)
    log.info("%s", report.summary())
    return SplitPlan(train.astype(np.int64), validation.astype(np.int64),
                     bool(cfg.validation_data), keys[train], report)


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
    return ([read["data"][i] for i in plan.train],
            [held_out[i] for i in plan.validation], plan.report)


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
            "--validation-fraction 0.", field="validation_fraction", reason="empty_split")
    if count >= num_examples:
        raise DataError(f"= {fraction} of {num_examples} examples leaves no training "
                        "examples. Lower it or add data.", field="validation_fraction",
                        reason="empty_split")
    return count


def example_key(example: Example) -> tuple:
    """What makes two examples the same (their messages, not their source)."""
    return tuple((m.role, m.content) for m in example.messages)


def example_hash(example: Example) -> int:
    """`example_key` as a 64-bit hash, stable across processes."""
    digest = hashlib.blake2b(repr(example_key(example)).encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "little")


# ---------------------------------------------------------------- token cache


class TokenizedDataset(collections.abc.Sequence):
    """Tokenized examples in flat arrays (memory-mapped when loaded from disk).

    A dataset is a view: `index` picks, in order, which stored examples it
    holds. Examples dropped by truncation are stored as empty slots (length
    -1) so that indices stay those of the data stream; views skip them.

    Attributes:
        counts: {"examples", "truncated", "dropped_fully_truncated"}.
    """

    def __init__(self, tokens: np.ndarray, mask: np.ndarray, offsets: np.ndarray,
                 lengths: np.ndarray, index: np.ndarray | None = None):
        self.tokens, self.mask, self.offsets, self.lengths = tokens, mask, offsets, lengths
        picked = np.arange(len(lengths)) if index is None else np.asarray(index, np.int64)
        kept = lengths[picked] >= 0
        self.index = picked[kept]
        sizes = np.diff(offsets)[self.index]
        self.counts = {"examples": int(len(self.index)),
                       "truncated": int((lengths[self.index] > sizes).sum()),
                       "dropped_fully_truncated": int((~kept).sum())}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        slot = int(self.index[index])
        start, end = int(self.offsets[slot]), int(self.offsets[slot + 1])
        return TokenizedExample(np.asarray(self.tokens[start:end], np.int32),
                                np.asarray(self.mask[start:end], bool),
                                int(self.lengths[slot]))

    def sizes(self) -> np.ndarray:
        """Tokens stored per example (len of `token_ids`), without reading them."""
        return np.diff(self.offsets)[self.index]

    def select(self, index: np.ndarray) -> "TokenizedDataset":
        """A view of the stored slots `index` (dropped ones are skipped)."""
        return TokenizedDataset(self.tokens, self.mask, self.offsets, self.lengths, index)

    @classmethod
    def build(cls, tokenized: Iterable[TokenizedExample | None],
              directory: Path | None = None, name: str = "train") -> "TokenizedDataset":
        """Collects tokenized examples (None = dropped), in memory or on disk."""
        writer = TokenWriter(directory, name)
        for example in tokenized:
            writer.add(example)
        return writer.finish()

    @classmethod
    def load(cls, directory: Path, name: str, index: np.ndarray | None = None
             ) -> "TokenizedDataset":
        def mapped(key, dtype):
            path = directory / f"{name}.{key}.bin"
            return (np.memmap(path, dtype, mode="r") if path.stat().st_size
                    else np.zeros(0, dtype))

        return cls(mapped("tokens", np.int32), mapped("mask", np.uint8),
                   np.load(directory / f"{name}.offsets.npy"),
                   np.load(directory / f"{name}.lengths.npy"), index)


class TokenWriter:
    """Appends tokenized examples to flat arrays, on disk when given a dir.

    On disk, memory stays flat however much data passes: tokens and masks go
    straight to `{name}.tokens.bin` / `{name}.mask.bin`.
    """

    def __init__(self, directory: Path | None = None, name: str = "train"):
        self.directory, self.name = directory, name
        self.chunks: dict[str, list[np.ndarray]] = {"tokens": [], "mask": []}
        self.offsets, self.lengths = [0], []
        self.files = ({k: open(directory / f"{name}.{k}.bin", "wb") for k in self.chunks}
                      if directory else None)

    def add(self, example: TokenizedExample | None) -> None:
        if example is None:  # dropped: an empty slot keeps the indices aligned
            self.offsets.append(self.offsets[-1])
            self.lengths.append(-1)
            return
        for key, array in (("tokens", example.token_ids.astype(np.int32)),
                           ("mask", example.loss_mask.astype(np.uint8))):
            if self.files:
                self.files[key].write(array.tobytes())
            else:
                self.chunks[key].append(array)
        self.offsets.append(self.offsets[-1] + len(example.token_ids))
        self.lengths.append(example.num_tokens_before_truncation)

    def close(self) -> None:
        """Closes the token files (also on error); `finish` still works after."""
        for f in (self.files or {}).values():
            f.close()

    def finish(self) -> TokenizedDataset:
        offsets = np.asarray(self.offsets, np.int64)
        lengths = np.asarray(self.lengths, np.int64)
        if not self.files:
            return TokenizedDataset(_concat(self.chunks["tokens"], np.int32),
                                    _concat(self.chunks["mask"], bool), offsets, lengths)
        self.close()
        np.save(self.directory / f"{self.name}.offsets.npy", offsets)
        np.save(self.directory / f"{self.name}.lengths.npy", lengths)
        return TokenizedDataset.load(self.directory, self.name)


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def template_fingerprint(template: Template) -> str:
    """Changes when what the template renders changes (name or code)."""
    probe = (Message("system", "S"), Message("user", "U1"), Message("assistant", "A1"),
             Message("user", "U2"), Message("assistant", "A2"))
    text = repr((template.name, template.begin, template.stop_tokens,
                 template.turn_separator, template.render(probe)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_specs(cfg: Config) -> list[str]:
    """The data specs a run reads: `data`, then `validation_data` if set."""
    return list(cfg.data) + ([cfg.validation_data] if cfg.validation_data else [])


def data_fingerprint(cfg: Config) -> dict[str, str]:
    """{spec: its source's fingerprint} for every spec the run reads.

    A fingerprint changes when the data changes (a local file's is a hash of
    its bytes), so a checkpoint can tell which file was edited since.
    """
    return {spec: parse_spec(spec).fingerprint() for spec in data_specs(cfg)}


def cache_key(cfg: Config, template: Template, tokenizer: TextTokenizer,
              fingerprint: dict[str, str] | None = None) -> str:
    """Hash of everything the tokenized data depends on.

    `fingerprint` is `data_fingerprint(cfg)` when the caller has it already.
    """
    fingerprint = data_fingerprint(cfg) if fingerprint is None else fingerprint
    parts = {"format": CACHE_FORMAT,
             "files": [fingerprint[spec] for spec in data_specs(cfg)],
             "options": {name: getattr(cfg, name) for name in DATA_OPTIONS},
             "template": template_fingerprint(template),
             "tokenizer": tokenizer.fingerprint()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def tokenize_split(cfg: Config, template: Template, tokenizer: TextTokenizer,
                   directory: Path | None = None
                   ) -> tuple[TokenizedDataset, TokenizedDataset, dict]:
    """Streams, tokenizes and splits the data in one pass (see `plan_split`).

    Each example is tokenized as it is read and appended to flat token
    arrays (files in `directory`, else memory); the split is a pair of index
    arrays into them, so no `Example` outlives its tokenization.
    """
    writers = {stream: TokenWriter(directory, stream) for stream in ("data", "validation_data")}

    def visit(stream: str, example: Example) -> None:
        writers[stream].add(tokenize_example(example, template, tokenizer,
                                             cfg.sequence_length, cfg.completion_only_loss))

    try:
        plan = plan_split(cfg, visit)
    finally:
        for writer in writers.values():
            writer.close()
    stored = {stream: writer.finish() for stream, writer in writers.items()}
    held_out = stored["validation_data" if plan.validation_is_separate else "data"]
    report = plan.report.to_dict()
    if directory:
        np.save(directory / "train.index.npy", plan.train)
        np.save(directory / "validation.index.npy", plan.validation)
        (directory / "report.json").write_text(json.dumps(report))
    return stored["data"].select(plan.train), held_out.select(plan.validation), report


def load_token_split(directory: Path) -> tuple[TokenizedDataset, TokenizedDataset, dict]:
    """The split `tokenize_split` wrote to `directory`, memory-mapped."""
    report = json.loads((directory / "report.json").read_text())
    train = TokenizedDataset.load(directory, "data", np.load(directory / "train.index.npy"))
    # A validation_data stream holds examples exactly when it was used (an
    # empty one is an error), so it says where the validation indices point.
    separate = len(np.load(directory / "validation_data.lengths.npy"))
    validation = TokenizedDataset.load(directory, "validation_data" if separate else "data",
                                       np.load(directory / "validation.index.npy"))
    return train, validation, report


def cache_tokenized(cfg: Config, template: Template, tokenizer: TextTokenizer
                    ) -> tuple[TokenizedDataset, TokenizedDataset, dict]:
    """The tokenized train/validation split, cached in `cfg.tokenized_cache_dir`.

    A second run with the same data files, data options, template, tokenizer
    vocabulary and sequence length loads memory-mapped tokens instead of
    reading and tokenizing again. Without a cache dir it tokenizes in memory.

    Returns:
        (train, validation, report): the report is the LoadReport as a dict,
        plus per-split "train"/"validation" counts, "cache" details and
        "fingerprint" (`data_fingerprint`: {spec: hash}, which checkpoints
        keep to refuse resuming on edited data).
    """
    fingerprint = data_fingerprint(cfg)
    if not cfg.tokenized_cache_dir:
        return _finish(*tokenize_split(cfg, template, tokenizer), {"hit": False, "path": ""},
                       fingerprint)
    key = cache_key(cfg, template, tokenizer, fingerprint)
    path = Path(cfg.tokenized_cache_dir).expanduser() / key
    hit = (path / "report.json").exists()
    if not hit:
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            tokenize_split(cfg, template, tokenizer, tmp)
            os.replace(tmp, path)  # atomic: a crash never leaves a half cache
        except OSError:  # another run finished first; its copy is identical
            if not (path / "report.json").exists():
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        log.info("Using tokenized data cached in %s.", path)
    return _finish(*load_token_split(path), {"hit": hit, "path": str(path)}, fingerprint)


def _finish(train, validation, report, cache, fingerprint):
    for name, split in (("train", train), ("validation", validation)):
        counts = split.counts
        if counts["truncated"] or counts["dropped_fully_truncated"]:
            log.warning("%s: %d examples truncated; %d dropped because their response "
                        "was cut off entirely.", name, counts["truncated"],
                        counts["dropped_fully_truncated"])
    return train, validation, {**report, "train": train.counts,
                               "validation": validation.counts, "cache": cache,
                               "fingerprint": fingerprint}


# ------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m keras_ft.data stats --data FILE ...`: print and plot stats."""
    from keras_ft import stats

    parser = argparse.ArgumentParser(prog="python -m keras_ft.data")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("stats", help="counts, token lengths, labels, "
                              "duplicates and rendered examples of the data")
    cmd.add_argument("--config", help="experiment YAML; flags override it")
    cmd.add_argument("--data", action="append", help="data spec; repeatable")
    cmd.add_argument("--data-weights", type=float, action="append")
    for flag in ("--fields", "--template", "--preset"):
        cmd.add_argument(flag)
    for flag in ("--sequence-length", "--num-examples", "--seed"):
        cmd.add_argument(flag, type=int)
    for flag in ("--skip-bad-records", "--drop-with-context"):
        cmd.add_argument(flag, action="store_true", default=None)
    cmd.add_argument("--no-tokens", action="store_true",
                     help="skip tokenization (no preset needed)")
    cmd.add_argument("--plot", default="data_stats.png", help="PNG to write ('' = none)")
    cmd.add_argument("--show", type=int, default=3, help="rendered examples to print")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    names = ("data", "data_weights", "fields", "template", "preset", "sequence_length",
             "num_examples", "seed", "skip_bad_records", "drop_with_context")
    overrides = {name: getattr(args, name) for name in names}
    try:
        cfg = load_config(args.config, overrides)
        result = stats.collect_stats(cfg, use_tokenizer=not args.no_tokens,
                                     num_rendered=args.show)
    except ValueError as e:  # DataError included: file, line and field
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(stats.format_stats(result))
    if args.plot:
        print(f"plot: {stats.plot_stats(result, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
