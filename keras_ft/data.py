"""Data stage: specs -> Examples -> train/validation split -> cached tokens.

`load_examples(cfg)` reads every `cfg.data` spec (mixed by `data_weights`),
drops records with a context if asked, keeps the first `num_examples`,
shuffles with `seed` and splits off `validation_fraction` (or reads
`validation_data`); validation never overlaps training.
`cache_tokenized(cfg, template, tokenizer)` does the same and tokenizes, once:
the tokens are cached on disk, keyed by the data files' hashes, the data
options, the template, the tokenizer's vocabulary and the sequence length.
`python -m keras_ft.data stats --data ...` shows what is in the data.
"""

from __future__ import annotations

import argparse
import collections.abc
import hashlib
import itertools
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from keras_ft.config import Config, load_config
from keras_ft.records import DataError, FieldMapping, LoadReport, iter_examples
from keras_ft.sources import interleave, parse_spec
from keras_ft.templates import Example, Message, Template
from keras_ft.tokens import TextTokenizer, TokenizedExample, tokenize_example

log = logging.getLogger(__name__)
CACHE_FORMAT = 1  # bump when the cache layout or tokenization changes
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


def load_examples(cfg: Config) -> tuple[list[Example], list[Example], LoadReport]:
    """Reads, filters, shuffles and splits the data of `cfg`.

    Returns:
        (training examples, validation examples, report). Validation is
        empty when `validation_fraction` is 0 and no `validation_data` is set.

    Raises:
        DataError: a bad record (unless `skip_bad_records`), no usable
            examples, or a validation split that would be empty.
        ValueError: inconsistent data options.
    """
    report = LoadReport()
    examples = stream_examples(cfg, cfg.data, report, cfg.data_weights)
    if cfg.num_examples:
        examples = itertools.islice(examples, cfg.num_examples)
    examples = list(examples)
    if cfg.num_examples and len(examples) == cfg.num_examples:
        report.notes.append(f"kept the first num_examples={cfg.num_examples} examples; "
                            "later records were not read")
    if not examples:
        raise DataError(f"hold no usable examples.\n{report.summary()}",
                        location=", ".join(cfg.data), reason="no_examples")
    if cfg.shuffle:
        examples = shuffle_examples(examples, cfg.seed)
    if cfg.validation_data:
        val_report = LoadReport()
        validation = list(stream_examples(cfg, (cfg.validation_data,), val_report))
        report.notes.append(f"validation data: {val_report.summary()}")
        if not validation:
            raise DataError("holds no usable examples.", location=cfg.validation_data,
                            field="validation_data", reason="no_examples")
        train = examples
    else:
        train, validation = split_examples(examples, cfg.validation_fraction)
    train, report.num_overlap_removed = remove_overlap(train, validation)
    if not train:
        raise DataError("no training examples are left: every one equals a "
                        "validation example.", field="validation_data",
                        reason="empty_split")
    report.num_train, report.num_validation = len(train), len(validation)
    log.info("%s", report.summary())
    return train, validation, report


def shuffle_examples(examples: Sequence[Example], seed: int) -> list[Example]:
    """A permutation that depends only on `seed` and the number of examples."""
    order = np.random.default_rng(seed).permutation(len(examples))
    return [examples[i] for i in order]


def split_examples(examples: Sequence[Example], fraction: float
                   ) -> tuple[list[Example], list[Example]]:
    """Splits off the last `fraction` of examples (rounded) for validation.

    Raises:
        DataError: naming `validation_fraction` when a split would be empty.
    """
    examples = list(examples)
    if fraction == 0:
        return examples, []
    count = int(len(examples) * fraction + 0.5)
    if count == 0:
        need = int(np.ceil(0.5 / fraction))
        raise DataError(
            f"= {fraction} of {len(examples)} examples leaves the validation split "
            f"empty. Use at least {need} examples, pass --validation-data, or set "
            "--validation-fraction 0.", field="validation_fraction", reason="empty_split")
    if count >= len(examples):
        raise DataError(f"= {fraction} of {len(examples)} examples leaves no training "
                        "examples. Lower it or add data.", field="validation_fraction",
                        reason="empty_split")
    return examples[:-count], examples[-count:]


def example_key(example: Example) -> tuple:
    """What makes two examples the same (their messages, not their source)."""
    return tuple((m.role, m.content) for m in example.messages)


def remove_overlap(train: list[Example], validation: list[Example]
                   ) -> tuple[list[Example], int]:
    """Drops training examples equal to a validation example; returns count."""
    held_out = {example_key(e) for e in validation}
    kept = [e for e in train if example_key(e) not in held_out]
    return kept, len(train) - len(kept)


# ---------------------------------------------------------------- token cache


class TokenizedDataset(collections.abc.Sequence):
    """Tokenized examples in flat arrays (memory-mapped when loaded from disk).

    Attributes:
        counts: {"examples", "truncated", "dropped_fully_truncated"}.
    """

    def __init__(self, tokens: np.ndarray, mask: np.ndarray, offsets: np.ndarray,
                 lengths: np.ndarray, counts: dict):
        self.tokens, self.mask, self.offsets, self.lengths = tokens, mask, offsets, lengths
        self.counts = counts

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        return TokenizedExample(np.asarray(self.tokens[start:end], np.int32),
                                np.asarray(self.mask[start:end], bool),
                                int(self.lengths[index]))

    @classmethod
    def build(cls, tokenized: Iterable[TokenizedExample | None],
              directory: Path | None = None, name: str = "train") -> "TokenizedDataset":
        """Collects tokenized examples (None = dropped), in memory or on disk."""
        chunks: dict[str, list[np.ndarray]] = {"tokens": [], "mask": []}
        offsets, lengths = [0], []
        counts = {"examples": 0, "truncated": 0, "dropped_fully_truncated": 0}
        files = ({k: open(directory / f"{name}.{k}.bin", "wb") for k in chunks}
                 if directory else None)
        try:
            for example in tokenized:
                if example is None:
                    counts["dropped_fully_truncated"] += 1
                    continue
                counts["examples"] += 1
                counts["truncated"] += int(example.truncated)
                for key, array in (("tokens", example.token_ids.astype(np.int32)),
                                   ("mask", example.loss_mask.astype(np.uint8))):
                    if files:
                        files[key].write(array.tobytes())
                    else:
                        chunks[key].append(array)
                offsets.append(offsets[-1] + len(example.token_ids))
                lengths.append(example.num_tokens_before_truncation)
        finally:
            for f in (files or {}).values():
                f.close()
        if directory:
            np.save(directory / f"{name}.offsets.npy", np.asarray(offsets, np.int64))
            np.save(directory / f"{name}.lengths.npy", np.asarray(lengths, np.int64))
            (directory / f"{name}.counts.json").write_text(json.dumps(counts))
            return cls.load(directory, name)
        return cls(_concat(chunks["tokens"], np.int32), _concat(chunks["mask"], bool),
                   np.asarray(offsets, np.int64), np.asarray(lengths, np.int64), counts)

    @classmethod
    def load(cls, directory: Path, name: str) -> "TokenizedDataset":
        def mapped(key, dtype):
            path = directory / f"{name}.{key}.bin"
            return (np.memmap(path, dtype, mode="r") if path.stat().st_size
                    else np.zeros(0, dtype))

        return cls(mapped("tokens", np.int32), mapped("mask", np.uint8),
                   np.load(directory / f"{name}.offsets.npy"),
                   np.load(directory / f"{name}.lengths.npy"),
                   json.loads((directory / f"{name}.counts.json").read_text()))


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


def template_fingerprint(template: Template) -> str:
    """Changes when what the template renders changes (name or code)."""
    probe = (Message("system", "S"), Message("user", "U1"), Message("assistant", "A1"),
             Message("user", "U2"), Message("assistant", "A2"))
    text = repr((template.name, template.begin, template.stop_tokens,
                 template.turn_separator, template.render(probe)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(cfg: Config, template: Template, tokenizer: TextTokenizer) -> str:
    """Hash of everything the tokenized data depends on."""
    specs = list(cfg.data) + ([cfg.validation_data] if cfg.validation_data else [])
    parts = {"format": CACHE_FORMAT,
             "files": [parse_spec(spec).fingerprint() for spec in specs],
             "options": {name: getattr(cfg, name) for name in DATA_OPTIONS},
             "template": template_fingerprint(template),
             "tokenizer": tokenizer.fingerprint()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def cache_tokenized(cfg: Config, template: Template, tokenizer: TextTokenizer
                    ) -> tuple[TokenizedDataset, TokenizedDataset, dict]:
    """`load_examples` + tokenization, cached in `cfg.tokenized_cache_dir`.

    A second run with the same data files, data options, template, tokenizer
    vocabulary and sequence length loads memory-mapped tokens instead of
    reading and tokenizing again. Without a cache dir it tokenizes in memory.

    Returns:
        (train, validation, report): the report is the LoadReport as a dict,
        plus per-split "train"/"validation" counts and "cache" details.
    """
    def tokenize(examples):
        return (tokenize_example(e, template, tokenizer, cfg.sequence_length,
                                 cfg.completion_only_loss) for e in examples)

    if not cfg.tokenized_cache_dir:
        train, validation, report = load_examples(cfg)
        splits = TokenizedDataset.build(tokenize(train)), TokenizedDataset.build(tokenize(validation))
        return _finish(*splits, report.to_dict(), {"hit": False, "path": ""})
    key = cache_key(cfg, template, tokenizer)
    path = Path(cfg.tokenized_cache_dir).expanduser() / key
    if not (path / "report.json").exists():
        train, validation, report = load_examples(cfg)
        tmp = path.with_name(f".{key}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        TokenizedDataset.build(tokenize(train), tmp, "train")
        TokenizedDataset.build(tokenize(validation), tmp, "validation")
        (tmp / "report.json").write_text(json.dumps(report.to_dict()))
        try:
            os.replace(tmp, path)  # atomic: a crash never leaves a half cache
        except OSError:  # another run finished first; its copy is identical
            shutil.rmtree(tmp, ignore_errors=True)
        hit = False
    else:
        log.info("Using tokenized data cached in %s.", path)
        hit = True
    report = json.loads((path / "report.json").read_text())
    return _finish(TokenizedDataset.load(path, "train"),
                   TokenizedDataset.load(path, "validation"), report,
                   {"hit": hit, "path": str(path)})


def _finish(train, validation, report, cache):
    for name, split in (("train", train), ("validation", validation)):
        counts = split.counts
        if counts["truncated"] or counts["dropped_fully_truncated"]:
            log.warning("%s: %d examples truncated; %d dropped because their response "
                        "was cut off entirely.", name, counts["truncated"],
                        counts["dropped_fully_truncated"])
    return train, validation, {**report, "train": train.counts,
                               "validation": validation.counts, "cache": cache}


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
