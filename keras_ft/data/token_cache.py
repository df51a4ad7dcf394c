"""Tokenized examples cached on disk, once, and served memory-mapped.

`cache_tokenized(cfg, template, tokenizer)` tokenizes each example as it is
read, straight to disk: the tokens are cached keyed by the data files'
hashes, the data options, the template, the tokenizer's vocabulary and the
sequence length, so files larger than memory train from memory-mapped tokens.
"""

from __future__ import annotations

import collections.abc
import hashlib
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from keras_ft.config import Config
from keras_ft.data.sources import parse_spec
from keras_ft.data.split import DATA_OPTIONS, plan_split
from keras_ft.data.tokenizer import TextTokenizer, TokenizedExample, tokenize_example
from keras_ft.templates import Example, Message, Template

log = logging.getLogger(__name__)


CACHE_FORMAT = 2  # bump when the cache layout or tokenization changes


class TokenizedDataset(collections.abc.Sequence):
    """Tokenized examples in flat arrays (memory-mapped when loaded from disk).

    A dataset is a view: `index` picks, in order, which stored examples it
    holds. Examples dropped by truncation are stored as empty slots (length
    -1) so that indices stay those of the data stream; views skip them.

    Attributes:
        counts: {"examples", "truncated", "dropped_fully_truncated"}.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        mask: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        index: np.ndarray | None = None,
    ):
        self.tokens, self.mask, self.offsets, self.lengths = tokens, mask, offsets, lengths
        picked = np.arange(len(lengths)) if index is None else np.asarray(index, np.int64)
        kept = lengths[picked] >= 0
        self.index = picked[kept]
        sizes = np.diff(offsets)[self.index]
        self.counts = {
            "examples": int(len(self.index)),
            "truncated": int((lengths[self.index] > sizes).sum()),
            "dropped_fully_truncated": int((~kept).sum()),
        }

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        slot = int(self.index[index])
        start, end = int(self.offsets[slot]), int(self.offsets[slot + 1])
        return TokenizedExample(
            np.asarray(self.tokens[start:end], np.int32),
            np.asarray(self.mask[start:end], bool),
            int(self.lengths[slot]),
        )

    def sizes(self) -> np.ndarray:
        """Tokens stored per example (len of `token_ids`), without reading them."""
        return np.diff(self.offsets)[self.index]

    def select(self, index: np.ndarray) -> "TokenizedDataset":
        """A view of the stored slots `index` (dropped ones are skipped)."""
        return TokenizedDataset(self.tokens, self.mask, self.offsets, self.lengths, index)

    @classmethod
    def build(
        cls,
        tokenized: Iterable[TokenizedExample | None],
        directory: Path | None = None,
        name: str = "train",
    ) -> "TokenizedDataset":
        """Collects tokenized examples (None = dropped), in memory or on disk."""
        writer = TokenWriter(directory, name)
        for example in tokenized:
            writer.add(example)
        return writer.finish()

    @classmethod
    def load(
        cls, directory: Path, name: str, index: np.ndarray | None = None
    ) -> "TokenizedDataset":
        """Memory-maps the stream `name` that a `TokenWriter` wrote to `directory`.

        Raises:
            TokenCacheError: naming the file when one is missing or unreadable,
                or when the arrays disagree (e.g. a truncated token file).
        """

        def mapped(key, dtype):
            return _read(
                directory,
                f"{name}.{key}.bin",
                lambda path: (
                    np.memmap(path, dtype, mode="r") if path.stat().st_size else np.zeros(0, dtype)
                ),
            )

        tokens, mask = mapped("tokens", np.int32), mapped("mask", np.uint8)
        offsets = _read(directory, f"{name}.offsets.npy", np.load)
        lengths = _read(directory, f"{name}.lengths.npy", np.load)
        problem = _stream_problem(tokens, mask, offsets, lengths, index)
        if problem:
            raise TokenCacheError(directory, f"stream {name!r}: {problem}")
        return cls(tokens, mask, offsets, lengths, index)


class TokenWriter:
    """Appends tokenized examples to flat arrays, on disk when given a dir.

    On disk, memory stays flat however much data passes: tokens and masks go
    straight to `{name}.tokens.bin` / `{name}.mask.bin`.
    """

    def __init__(self, directory: Path | None = None, name: str = "train"):
        self.directory, self.name = directory, name
        self.chunks: dict[str, list[np.ndarray]] = {"tokens": [], "mask": []}
        self.offsets, self.lengths = [0], []
        self.files = (
            {k: open(directory / f"{name}.{k}.bin", "wb") for k in self.chunks}
            if directory
            else None
        )

    def add(self, example: TokenizedExample | None) -> None:
        if example is None:  # dropped: an empty slot keeps the indices aligned
            self.offsets.append(self.offsets[-1])
            self.lengths.append(-1)
            return
        for key, array in (
            ("tokens", example.token_ids.astype(np.int32)),
            ("mask", example.loss_mask.astype(np.uint8)),
        ):
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
            return TokenizedDataset(
                _concat(self.chunks["tokens"], np.int32),
                _concat(self.chunks["mask"], bool),
                offsets,
                lengths,
            )
        self.close()
        np.save(self.directory / f"{self.name}.offsets.npy", offsets)
        np.save(self.directory / f"{self.name}.lengths.npy", lengths)
        return TokenizedDataset.load(self.directory, self.name)


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)


class TokenCacheError(ValueError):
    """A token-cache entry that cannot be trusted; `reason` says which file and why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"token cache entry {path}: {reason}")
        self.path, self.reason = Path(path), reason


MANIFEST = "manifest.json"  # written last: an entry without one is unfinished


OWNER = "owner.json"  # the host and process that wrote (or are writing) an entry


STREAMS = ("data", "validation_data")


ENTRY_FILES = ("report.json", "train.index.npy", "validation.index.npy") + tuple(
    f"{stream}.{part}"
    for stream in STREAMS
    for part in ("tokens.bin", "mask.bin", "offsets.npy", "lengths.npy")
)


BIN_DTYPES = {"tokens.bin": np.int32, "mask.bin": np.uint8}


# `.KEY.PID.tmp`: an entry being written; `.KEY.PID.bad.tmp`: a bad one being removed.
TMP_NAME = re.compile(r"\.(?P<key>[0-9a-f]{20})\.(?P<pid>\d+)(?:\.bad)?\.tmp")


def _read(directory: Path, name: str, loader: Callable[[Path], object]):
    """`loader(directory / name)`, its errors as a TokenCacheError naming the file."""
    try:
        return loader(directory / name)
    except FileNotFoundError as e:
        raise TokenCacheError(directory, f"{name} is missing") from e
    except (OSError, ValueError, EOFError) as e:  # numpy's errors for a bad file
        raise TokenCacheError(directory, f"{name} is unreadable ({type(e).__name__}: {e})") from e


def _npy_header(path: Path) -> tuple[str, list[int]]:
    """(dtype, shape) of a .npy file, reading only its header."""
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(f)
    return np.dtype(dtype).str, list(shape)


def _digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "blake2b").hexdigest()


def _stream_problem(tokens, mask, offsets, lengths, index) -> str | None:
    """What is inconsistent between a stream's arrays (and a split index), if anything."""
    for name, array in (("offsets", offsets), ("lengths", lengths)):
        if array.ndim != 1 or array.dtype != np.int64:
            return f"{name} is {array.dtype}{list(array.shape)}, not a 1-D int64 array"
    if len(offsets) != len(lengths) + 1:
        return f"{len(offsets)} offsets for {len(lengths)} examples"
    if offsets[0] != 0 or (np.diff(offsets) < 0).any():
        return "the offsets do not increase from 0"
    if not len(tokens) == len(mask) == offsets[-1]:
        return (
            f"the offsets end at {offsets[-1]} tokens, but tokens.bin holds "
            f"{len(tokens)} and mask.bin {len(mask)}"
        )
    if index is not None:
        index = np.asarray(index)
        if index.ndim != 1 or (
            index.size
            and (index.dtype.kind not in "iu" or index.min() < 0 or index.max() >= len(lengths))
        ):
            return f"the split index points outside its {len(lengths)} stored examples"
    return None


def write_manifest(directory: Path) -> dict:
    """Records what a finished entry holds (sizes, dtypes, shapes, checksums).

    Written last, so an entry with a manifest was written to the end;
    `verify_entry` checks an entry against it.
    """
    files = {}
    for name in ENTRY_FILES:
        path = directory / name
        entry = {"bytes": path.stat().st_size, "blake2b": _digest(path)}
        if name.endswith(".npy"):
            entry["dtype"], entry["shape"] = _npy_header(path)
        elif name.endswith(".bin"):
            dtype = np.dtype(BIN_DTYPES[name.split(".", 1)[1]])
            entry["dtype"], entry["count"] = dtype.str, entry["bytes"] // dtype.itemsize
        files[name] = entry
    manifest = {"format": CACHE_FORMAT, "files": files}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def verify_entry(directory: Path, checksums: bool = False) -> dict:
    """Checks a cache entry against its manifest; returns the manifest.

    Cheap by default: the manifest is there and every file has the size (and
    each .npy the dtype and shape) it records. `checksums=True` also reads
    every byte and compares the checksums.

    Raises:
        TokenCacheError: naming the file and what is wrong with it.
    """
    manifest = _read(directory, MANIFEST, lambda path: json.loads(path.read_text()))
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise TokenCacheError(directory, f"{MANIFEST} is not a format-{CACHE_FORMAT} manifest")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(files.get(name), dict) and isinstance(files[name].get("bytes"), int)
        for name in ENTRY_FILES
    ):
        raise TokenCacheError(directory, f"{MANIFEST} does not list every file with its size")
    for name in ENTRY_FILES:
        expected = files[name]
        size = _read(directory, name, lambda path: path.stat().st_size)
        if size != expected["bytes"]:
            raise TokenCacheError(
                directory,
                f"{name} holds {size} bytes; {MANIFEST} says "
                f"{expected['bytes']} (truncated or overwritten)",
            )
        if name.endswith(".npy"):
            dtype, shape = _read(directory, name, _npy_header)
            if [dtype, shape] != [expected.get("dtype"), expected.get("shape")]:
                raise TokenCacheError(
                    directory,
                    f"{name} is {dtype}{shape}; {MANIFEST} says "
                    f"{expected.get('dtype')}{expected.get('shape')}",
                )
        if checksums and _read(directory, name, _digest) != expected.get("blake2b"):
            raise TokenCacheError(directory, f"{name} does not match its checksum in {MANIFEST}")
    return manifest


def _process_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (state, ..., [19] = start time), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat.rsplit(")", 1)[-1].split()


def _owner() -> dict:
    stat = _process_stat(os.getpid())
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "start": stat[19] if stat and len(stat) > 19 else None,
    }


def _writer_alive(tmp: Path, pid: int) -> bool:
    """Whether process `pid`, which named temporary entry `tmp`, may still write it.

    A run on another host (its owner.json says) is left alone; here, a PID
    that is gone, a zombie, or reused by a later process (another start time)
    is dead.
    """
    try:
        owner = json.loads((tmp / OWNER).read_text())
    except (OSError, ValueError):
        owner = None  # not written yet (or a `.bad.tmp` of an older entry)
    owner = owner if isinstance(owner, dict) else {}
    if owner.get("host", socket.gethostname()) != socket.gethostname():
        return True
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # alive, another user's
        pass
    stat = _process_stat(pid)
    if stat and stat[0] == "Z":
        return False
    start = owner.get("start")
    return not (start and stat and len(stat) > 19 and stat[19] != start)


def remove_stale_entries(root: Path) -> list[Path]:
    """Removes the temporary entries in cache dir `root` whose writer is gone.

    A run killed while tokenizing leaves its `.KEY.PID.tmp` dir behind; one
    whose process still runs (a concurrent run) is left alone.
    """
    removed = []
    try:
        children = list(root.iterdir())
    except OSError:  # no cache yet
        return removed
    for child in children:
        match = TMP_NAME.fullmatch(child.name)
        if not match or _writer_alive(child, int(match["pid"])):
            continue
        log.info(
            "Removing %s: a temporary token cache entry of process %s, which is gone.",
            child,
            match["pid"],
        )
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        removed.append(child)
    return removed


def _discard(path: Path) -> None:
    """Removes a bad entry, renamed aside first so no run reads half of it."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.bad.tmp")
    shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another run removed it first
        return
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


def template_fingerprint(template: Template) -> str:
    """Changes when what the template renders changes (name or code)."""
    probe = (
        Message("system", "S"),
        Message("user", "U1"),
        Message("assistant", "A1"),
        Message("user", "U2"),
        Message("assistant", "A2"),
    )
    text = repr(
        (
            template.name,
            template.begin,
            template.stop_tokens,
            template.turn_separator,
            template.render(probe),
        )
    )
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


def cache_key(
    cfg: Config,
    template: Template,
    tokenizer: TextTokenizer,
    fingerprint: dict[str, str] | None = None,
) -> str:
    """Hash of everything the tokenized data depends on.

    `fingerprint` is `data_fingerprint(cfg)` when the caller has it already.
    """
    fingerprint = data_fingerprint(cfg) if fingerprint is None else fingerprint
    parts = {
        "format": CACHE_FORMAT,
        "files": [fingerprint[spec] for spec in data_specs(cfg)],
        "options": {name: getattr(cfg, name) for name in DATA_OPTIONS},
        "template": template_fingerprint(template),
        "tokenizer": tokenizer.fingerprint(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def tokenize_split(
    cfg: Config, template: Template, tokenizer: TextTokenizer, directory: Path | None = None
) -> tuple[TokenizedDataset, TokenizedDataset, dict]:
    """Streams, tokenizes and splits the data in one pass (see `plan_split`).

    Each example is tokenized as it is read and appended to flat token
    arrays (files in `directory`, else memory); the split is a pair of index
    arrays into them, so no `Example` outlives its tokenization.
    """
    writers = {stream: TokenWriter(directory, stream) for stream in ("data", "validation_data")}

    def visit(stream: str, example: Example) -> None:
        writers[stream].add(
            tokenize_example(
                example, template, tokenizer, cfg.sequence_length, cfg.completion_only_loss
            )
        )

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


def load_token_split(
    directory: Path, checksums: bool = False
) -> tuple[TokenizedDataset, TokenizedDataset, dict]:
    """The split `tokenize_split` wrote to `directory`, memory-mapped.

    The entry is checked against its manifest first (`verify_entry`; the
    checksums too if `checksums`), then each stream's arrays against each other.

    Raises:
        TokenCacheError: naming the entry, the file and what is wrong with it.
    """
    verify_entry(directory, checksums)
    report = _read(directory, "report.json", lambda path: json.loads(path.read_text()))
    if not isinstance(report, dict):
        raise TokenCacheError(directory, "report.json does not hold a JSON object")
    train = TokenizedDataset.load(directory, "data", _read(directory, "train.index.npy", np.load))
    # A validation_data stream holds examples exactly when it was used (an
    # empty one is an error), so it says where the validation indices point.
    separate = len(_read(directory, "validation_data.lengths.npy", np.load))
    validation = TokenizedDataset.load(
        directory,
        "validation_data" if separate else "data",
        _read(directory, "validation.index.npy", np.load),
    )
    return train, validation, report


def cache_tokenized(
    cfg: Config, template: Template, tokenizer: TextTokenizer
) -> tuple[TokenizedDataset, TokenizedDataset, dict]:
    """The tokenized train/validation split, cached in `cfg.tokenized_cache_dir`.

    A second run with the same data files, data options, template, tokenizer
    vocabulary and sequence length loads memory-mapped tokens instead of
    reading and tokenizing again. Without a cache dir it tokenizes in memory.

    An entry is trusted only if it checks out against the manifest written
    as its last step (sizes, dtypes, shapes; see `verify_entry`); a bad one
    (unfinished, truncated, unreadable) is rebuilt with a warning, and
    report["cache"]["rebuilt"] says why. Temporary entries left by killed
    runs are removed; a concurrent run's are kept.

    Returns:
        (train, validation, report): the report is the LoadReport as a dict,
        plus per-split "train"/"validation" counts, "cache" details and
        "fingerprint" (`data_fingerprint`: {spec: hash}, which checkpoints
        keep to refuse resuming on edited data).
    """
    fingerprint = data_fingerprint(cfg)
    if not cfg.tokenized_cache_dir:
        return _finish(
            *tokenize_split(cfg, template, tokenizer),
            {"hit": False, "path": ""},
            fingerprint,
            cfg.sequence_length,
        )
    key = cache_key(cfg, template, tokenizer, fingerprint)
    path = Path(cfg.tokenized_cache_dir).expanduser() / key
    *split, cache = _cached_split(cfg, template, tokenizer, path)
    return _finish(*split, cache, fingerprint, cfg.sequence_length)


def _cached_split(
    cfg: Config, template: Template, tokenizer: TextTokenizer, path: Path
) -> tuple[TokenizedDataset, TokenizedDataset, dict, dict]:
    """The cache entry `path` loaded, or (re)built if missing or bad; + cache details."""
    remove_stale_entries(path.parent)
    cache = {"hit": False, "path": str(path)}
    if path.exists():
        try:
            split = load_token_split(path)
        except TokenCacheError as e:
            log.warning("Rebuilding the token cache entry %s: %s.", path, e.reason)
            cache["rebuilt"] = e.reason
            _discard(path)
        else:
            log.info("Using tokenized data cached in %s.", path)
            return (*split, {**cache, "hit": True})
    return (*_build_entry(cfg, template, tokenizer, path), cache)


def _build_entry(
    cfg: Config, template: Template, tokenizer: TextTokenizer, path: Path
) -> tuple[TokenizedDataset, TokenizedDataset, dict]:
    """Tokenizes into `.KEY.PID.tmp`, checks it, then renames it to `path`.

    The rename is atomic, so a run killed midway leaves only its temporary
    dir (removed by a later run). If another run published the entry first,
    its copy (the same tokens) is used once it checks out.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        (tmp / OWNER).write_text(json.dumps(_owner()))
        tokenize_split(cfg, template, tokenizer, tmp)
        write_manifest(tmp)
        # Memory maps follow their files through the rename (and outlive them).
        split = load_token_split(tmp)
        for _ in range(3):
            try:
                os.replace(tmp, path)
                return split
            except OSError:  # a non-empty dir is there: another run finished first
                if not path.exists():
                    raise
            try:
                theirs = load_token_split(path)
            except TokenCacheError as e:
                log.warning("Replacing the token cache entry %s: %s.", path, e.reason)
                _discard(path)
            else:
                log.info("Another run cached %s first; using its copy.", path)
                return theirs
        return split  # still racing: keep ours, unpublished
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _finish(train, validation, report, cache, fingerprint, sequence_length):
    for name, split in (("train", train), ("validation", validation)):
        counts = split.counts
        if counts["truncated"] or counts["dropped_fully_truncated"]:
            log.warning(
                "%s: %d examples truncated; %d dropped because their response "
                "was cut off entirely.",
                name,
                counts["truncated"],
                counts["dropped_fully_truncated"],
            )
    dropped = train.counts["dropped_fully_truncated"]
    if not len(train) and dropped:
        raise ValueError(
            f"No training examples are left: all {dropped} were dropped because their "
            f"response starts after token {sequence_length}, the `sequence_length`. "
            "Raise `sequence_length` (--sequence-length), or shorten the prompts. "
            f"Received: sequence_length={sequence_length}"
        )
    return (
        train,
        validation,
        {
            **report,
            "train": train.counts,
            "validation": validation.counts,
            "cache": cache,
            "fingerprint": fingerprint,
        },
    )
