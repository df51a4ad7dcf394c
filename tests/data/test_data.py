"""load_examples: filter, first N, seeded shuffle, split; the token cache."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from keras_ft.config import Config
from keras_ft.data import split, token_cache
from keras_ft.data.records import DataError
from keras_ft.data.split import load_examples, validation_count
from keras_ft.data.token_cache import cache_tokenized
from keras_ft.templates import get_template

DOLLY = "databricks-dolly-15k/dolly_minillm_dev1000.jsonl"


def write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def pairs(prefix: str, count: int):
    return [{"prompt": f"{prefix}{i}?", "completion": f"{prefix}{i}."} for i in range(count)]


def test_real_dolly_recipe_filter_first_n_shuffle_split(shared_data):
    cfg = Config(
        data=(str(shared_data / DOLLY),),
        drop_with_context=True,
        num_examples=500,
        validation_fraction=0.1,
        seed=3,
    )
    train, validation, report = load_examples(cfg)
    assert (len(train), len(validation)) == (450, 50)
    assert report.num_dropped_with_context > 0 and report.num_kept == 500
    assert not any("\n\nContext:\n" in e.messages[0].content for e in train + validation)
    lines = sorted(int(e.source.rsplit(":", 1)[1]) for e in train + validation)
    assert lines[-1] < 1000 and len(set(lines)) == 500  # the first 500 kept records
    again = load_examples(cfg)
    assert [e.source for e in again[0]] == [e.source for e in train]
    reseeded = load_examples(dataclasses.replace(cfg, seed=4))
    assert [e.source for e in reseeded[0]] != [e.source for e in train]


def test_no_shuffle_keeps_file_order_and_validation_is_the_tail(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", pairs("q", 10))
    train, validation, _ = load_examples(
        Config(data=(path,), shuffle=False, validation_fraction=0.2)
    )
    assert [e.messages[0].content for e in train] == [f"q{i}?" for i in range(8)]
    assert [e.messages[0].content for e in validation] == ["q8?", "q9?"]


def test_validation_file_never_overlaps_training(tmp_path):
    train_path = write_jsonl(tmp_path / "train.jsonl", pairs("q", 10))
    val_path = write_jsonl(tmp_path / "val.jsonl", pairs("q", 3) + pairs("v", 2))
    train, validation, report = load_examples(Config(data=(train_path,), validation_data=val_path))
    assert len(validation) == 5 and len(train) == 7
    assert report.num_overlap_removed == 3
    assert not {split.example_key(e) for e in train} & {split.example_key(e) for e in validation}


def test_duplicates_across_a_split_are_removed_from_training(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", pairs("q", 5) * 4)
    train, validation, report = load_examples(Config(data=(path,), validation_fraction=0.25))
    held_out = {split.example_key(e) for e in validation}
    assert not any(split.example_key(e) in held_out for e in train)
    assert report.num_overlap_removed == 20 - 5 - len(train)


@pytest.mark.parametrize(
    "count, fraction, match",
    [
        (3, 0.1, "leaves the validation split empty. Use at least 5 examples"),
        (2, 0.9, "leaves no training examples"),
    ],
)
def test_empty_splits_are_errors_naming_the_field(tmp_path, count, fraction, match):
    path = write_jsonl(tmp_path / "d.jsonl", pairs("q", count))
    with pytest.raises(DataError, match=match) as info:
        load_examples(Config(data=(path,), validation_fraction=fraction))
    assert info.value.field == "validation_fraction"
    assert "validation_fraction" in str(info.value)


def test_no_usable_examples_and_skipping(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "P"}\nnot json\n{"prompt": "Q", "completion": "A"}\n')
    with pytest.raises(DataError, match=f"{path}:1: field `completion`"):
        load_examples(Config(data=(str(path),)))
    train, validation, report = load_examples(
        Config(data=(str(path),), skip_bad_records=True, validation_fraction=0.0)
    )
    assert len(train) == 1 and report.skipped == {"missing_field": 1, "malformed_json": 1}
    path.write_text("not json\n")
    with pytest.raises(DataError, match="hold no usable examples"):
        load_examples(Config(data=(str(path),), skip_bad_records=True))


def test_validation_count_rounds_to_nearest():
    assert validation_count(15, 0.1) == 2 and validation_count(5, 0.1) == 1
    assert validation_count(14, 0.1) == 1 and validation_count(7, 0.0) == 0


# ------------------------------------------------------------- token cache


@pytest.fixture(scope="module")
def tokenizers():
    """Two tiny SentencePiece vocabularies (keras-hub Gemma tokenizers)."""
    import keras_hub

    from keras_ft.data.tokenizer import TextTokenizer
    from keras_ft.testing import train_tiny_sentencepiece

    return [
        TextTokenizer(keras_hub.models.GemmaTokenizer(proto=train_tiny_sentencepiece(n)))
        for n in (160, 150)
    ]


def test_cache_tokenized_reuses_and_invalidates(tmp_path, tokenizers, monkeypatch):
    path = tmp_path / "d.jsonl"
    write_jsonl(path, pairs("How do I boil an egg ", 20))
    cfg = Config(
        data=(str(path),), tokenized_cache_dir=str(tmp_path / "cache"), sequence_length=128
    )
    template = get_template(cfg.template)
    first = cache_tokenized(cfg, template, tokenizers[0])
    assert first[2]["cache"]["hit"] is False
    assert (len(first[0]), len(first[1])) == (18, 2)
    assert first[2]["train"] == {"examples": 18, "truncated": 0, "dropped_fully_truncated": 0}

    def no_reading(*args):
        raise AssertionError("a cache hit must not read or tokenize the data")

    monkeypatch.setattr(token_cache, "plan_split", no_reading)
    monkeypatch.setattr(split, "stream_examples", no_reading)
    second = cache_tokenized(cfg, template, tokenizers[0])
    assert second[2]["cache"] == {"hit": True, "path": first[2]["cache"]["path"]}
    for a, b in zip(first[0], second[0]):
        assert (a.token_ids == b.token_ids).all() and (a.loss_mask == b.loss_mask).all()
    assert second[2]["num_train"] == 18
    monkeypatch.undo()

    changes = [
        (cfg, get_template("gemma"), tokenizers[0]),  # template
        (cfg, template, tokenizers[1]),  # tokenizer vocabulary
        (dataclasses.replace(cfg, sequence_length=64), template, tokenizers[0]),
    ]
    keys = {token_cache.cache_key(*change) for change in changes}
    keys.add(token_cache.cache_key(cfg, template, tokenizers[0]))
    assert len(keys) == 4
    for change in changes:
        assert cache_tokenized(*change)[2]["cache"]["hit"] is False
    write_jsonl(path, pairs("How do I boil an egg ", 21))  # the data file changed
    assert cache_tokenized(cfg, template, tokenizers[0])[2]["cache"]["hit"] is False


def test_cache_tokenized_without_a_cache_dir_counts_truncation(tmp_path, tokenizers):
    long = [{"prompt": "Explain. " * 40, "completion": "Paris is the capital."}] * 4
    path = write_jsonl(tmp_path / "d.jsonl", long + pairs("What is ", 6))
    cfg = Config(data=(path,), sequence_length=24, validation_fraction=0.0, tokenized_cache_dir="")
    train, validation, report = cache_tokenized(cfg, get_template(cfg.template), tokenizers[0])
    assert len(validation) == 0 and report["cache"]["hit"] is False
    assert report["train"]["dropped_fully_truncated"] == 4
    assert len(train) == 6 and all(len(e.token_ids) <= 25 for e in train)


def test_first_n_streams_and_stops_reading(tmp_path):
    # Records after the first N are never read, so a bad tail (or a file
    # larger than memory) does not matter.
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pairs("q", 5)) + "{broken\n")
    train, _, report = load_examples(
        Config(data=(str(path),), num_examples=5, validation_fraction=0.2)
    )
    assert len(train) == 4 and report.num_seen == 5
    assert any("num_examples=5" in note for note in report.notes)


def test_sample_data_files_load_and_have_numbered_steps():
    root = Path(__file__).parents[2] / "data"
    train, validation, report = load_examples(Config(data=(str(root / "how_to_steps.jsonl"),)))
    assert report.num_kept == 300 and report.shapes == {"prompt_completion": 300}
    for example in train + validation:
        question, answer = (m.content for m in example.messages)
        assert question.startswith("How do I ") and question.endswith("?")
        lines = answer.split("\n")
        assert [line.split(". ", 1)[0] for line in lines] == [
            str(i) for i in range(1, len(lines) + 1)
        ]
    chats, _, report = load_examples(
        Config(data=(str(root / "chat_sample.jsonl"),), validation_fraction=0.0)
    )
    assert (
        len(chats) == 20 and max(sum(m.role == "assistant" for m in e.messages) for e in chats) >= 2
    )


@pytest.mark.parametrize("on_disk", [False, True])
def test_streamed_token_split_equals_split_then_tokenize(tmp_path, tokenizers, on_disk):
    # The one-pass split (tokenize while reading, split by index) gives the same
    # examples, in the same order, as splitting Examples in memory and then
    # tokenizing; dropped (fully truncated) examples are counted in their split.
    from keras_ft.data.tokenizer import tokenize_example

    long = [
        {"prompt": f"Explain {i}. " + "Explain. " * 40, "completion": "Paris."} for i in range(6)
    ]
    records = pairs("What is ", 20) + long + pairs("What is ", 4)  # 4 duplicates
    path = write_jsonl(tmp_path / "d.jsonl", records)
    cfg = Config(
        data=(path,),
        sequence_length=24,
        validation_fraction=0.25,
        seed=5,
        tokenized_cache_dir=str(tmp_path / "cache") if on_disk else "",
    )
    template = get_template(cfg.template)
    train, validation, report = cache_tokenized(cfg, template, tokenizers[0])
    expected = load_examples(cfg)
    for served, examples, name in (
        (train, expected[0], "train"),
        (validation, expected[1], "validation"),
    ):
        tokenized = [tokenize_example(e, template, tokenizers[0], 24) for e in examples]
        kept = [t for t in tokenized if t is not None]
        assert [t.token_ids.tolist() for t in served] == [t.token_ids.tolist() for t in kept]
        assert [t.loss_mask.tolist() for t in served] == [t.loss_mask.tolist() for t in kept]
        assert report[name]["dropped_fully_truncated"] == len(tokenized) - len(kept)
    assert (
        report["train"]["dropped_fully_truncated"] + report["validation"]["dropped_fully_truncated"]
        == 6
    )
    assert report["num_overlap_removed"] == expected[2].num_overlap_removed > 0
    if on_disk:
        assert isinstance(train.tokens, np.memmap)


def test_a_large_file_streams_to_the_token_cache(tmp_path, tokenizers):
    # ~12 MB of JSONL is tokenized to disk while Python holds a small,
    # constant amount of memory: no list of examples or records is kept.
    import tracemalloc

    path = tmp_path / "large.jsonl"
    with path.open("w") as f:
        for i in range(3000):
            f.write(
                json.dumps(
                    {
                        "prompt": f"Question {i}: why?",
                        "completion": f"Answer {i}: " + "because of scattering. " * 180,
                    }
                )
                + "\n"
            )
    size = path.stat().st_size
    cfg = Config(
        data=(str(path),),
        sequence_length=32,
        validation_fraction=0.01,
        tokenized_cache_dir=str(tmp_path / "cache"),
    )
    tracemalloc.start()
    try:
        train, validation, report = cache_tokenized(cfg, get_template(cfg.template), tokenizers[0])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size > 10e6 and peak < size / 4, (size, peak)  # holding the text: > size
    assert (len(train), len(validation)) == (2970, 30)
    assert report["train"]["truncated"] == 2970  # every example is cut to 32 tokens
    held_out = {tuple(t.token_ids) for t in validation}
    assert len(held_out) == 30 and not any(tuple(t.token_ids) in held_out for t in train)


# ------------------------------------------- token cache: damaged and stale entries


def cached_run(tmp_path, tokenizer, cache_dir=None):
    """A cached tokenization of 30 pairs: (cfg, template, (train, validation, report))."""
    path = tmp_path / "d.jsonl"
    if not path.exists():
        write_jsonl(path, pairs("How do I boil an egg ", 30))
    cfg = Config(
        data=(str(path),),
        sequence_length=64,
        tokenized_cache_dir=str(cache_dir or tmp_path / "cache"),
    )
    template = get_template(cfg.template)
    return cfg, template, cache_tokenized(cfg, template, tokenizer)


def as_lists(split):
    return [
        (t.token_ids.tolist(), t.loss_mask.tolist(), t.num_tokens_before_truncation) for t in split
    ]


def assert_same_tokens(result, expected):
    assert as_lists(result[0]) == as_lists(expected[0])
    assert as_lists(result[1]) == as_lists(expected[1])


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def overwrite(path: Path, text: str = "") -> None:
    size = path.stat().st_size  # same size: only the content checks see it
    path.write_bytes((text.encode() * size)[:size] if text else b"\0" * size)


@pytest.mark.parametrize(
    "damage, name, reason",
    [
        (truncate, "data.tokens.bin", "data.tokens.bin holds"),
        (truncate, "data.mask.bin", "data.mask.bin holds"),
        (truncate, "data.offsets.npy", "data.offsets.npy holds"),
        (truncate, "train.index.npy", "train.index.npy holds"),
        (truncate, "report.json", "report.json holds"),
        (Path.unlink, "data.lengths.npy", "data.lengths.npy is missing"),
        (overwrite, "data.offsets.npy", "data.offsets.npy is unreadable"),
        (lambda path: path.unlink(missing_ok=True), "manifest.json", "manifest.json is missing"),
        (lambda path: overwrite(path, "{"), "manifest.json", "manifest.json is unreadable"),
    ],
)
def test_a_damaged_cache_entry_is_rebuilt_with_a_warning(
    tmp_path, tokenizers, caplog, damage, name, reason
):
    # A truncated, missing or unreadable file (or an entry without its
    # manifest, e.g. one from before manifests) is never trusted: the next run
    # warns, naming the entry and the file, and tokenizes again, to the same
    # tokens as a fresh tokenization; the run after that is a cache hit again.
    cfg, template, first = cached_run(tmp_path, tokenizers[0])
    entry = Path(first[2]["cache"]["path"])
    fresh = cache_tokenized(
        dataclasses.replace(cfg, tokenized_cache_dir=""), template, tokenizers[0]
    )
    assert_same_tokens(first, fresh)
    damage(entry / name)
    caplog.set_level("INFO", logger="keras_ft.data.token_cache")
    rebuilt = cache_tokenized(cfg, template, tokenizers[0])
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelname == "WARNING" and "token cache" in r.getMessage()
    ]
    assert len(warnings) == 1 and str(entry) in warnings[0] and reason in warnings[0]
    assert rebuilt[2]["cache"]["hit"] is False and reason in rebuilt[2]["cache"]["rebuilt"]
    assert_same_tokens(rebuilt, fresh)
    assert rebuilt[2]["num_train"] == fresh[2]["num_train"]
    caplog.clear()
    again = cache_tokenized(cfg, template, tokenizers[0])
    assert again[2]["cache"] == {"hit": True, "path": str(entry)}
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert_same_tokens(again, fresh)
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]  # no leftovers


def test_load_token_split_names_the_bad_file_and_checksums_catch_overwrites(tmp_path, tokenizers):
    _, _, first = cached_run(tmp_path, tokenizers[0])
    entry = Path(first[2]["cache"]["path"])
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["files"]["data.tokens.bin"]["count"] == len(first[0].tokens)
    assert manifest["files"]["data.offsets.npy"]["shape"] == [len(first[0].offsets)]
    overwrite(entry / "data.tokens.bin", "\x07")  # same size, other tokens
    token_cache.load_token_split(entry)  # the cheap checks (sizes) cannot see it ...
    with pytest.raises(
        token_cache.TokenCacheError,
        match="data.tokens.bin does not match its checksum in manifest.json",
    ):
        token_cache.load_token_split(entry, checksums=True)  # ... the checksums do
    # A stream whose arrays disagree (here offsets past the end of the tokens)
    # is refused by name, not left to fail in numpy at batch time.
    offsets = np.load(entry / "data.offsets.npy")
    offsets[-1] += 1
    np.save(entry / "data.offsets.npy", offsets)
    with pytest.raises(
        token_cache.TokenCacheError,
        match=r"stream 'data': the offsets end at \d+ "
        r"tokens, but tokens.bin holds",
    ):
        token_cache.load_token_split(entry)


def dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its PID names no process now
    return child.pid


@pytest.fixture
def live_pid():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield child.pid
    child.kill()
    child.wait()


def test_stale_temporary_entries_are_removed_and_live_ones_kept(
    tmp_path, tokenizers, caplog, live_pid
):
    import socket

    cache = tmp_path / "cache"
    _, _, first = cached_run(tmp_path, tokenizers[0], cache)
    key = Path(first[2]["cache"]["path"]).name

    def tmp_entry(name, owner=None):
        path = cache / name
        path.mkdir()
        (path / "data.tokens.bin").write_bytes(b"\0" * 12)  # half written
        if owner is not None:
            (path / "owner.json").write_text(json.dumps(owner))
        return path

    pid = dead_pid()
    here = socket.gethostname()
    stale = [
        tmp_entry(f".{key}.{pid}.tmp"),  # killed while tokenizing
        tmp_entry(f".0123456789abcdef0123.{pid}.bad.tmp"),  # killed while removing
        # the live PID was reused: the writer that named it started at another time
        tmp_entry(f".{key}.{live_pid}.tmp", {"host": here, "pid": live_pid, "start": "1"}),
    ]
    kept = [
        tmp_entry(f".0123456789abcdef0123.{live_pid}.tmp"),  # a concurrent run
        tmp_entry(f".{key}.{pid}1.tmp", {"host": here + "-other", "pid": pid}),
        tmp_entry(f".not-a-cache-key.{pid}.tmp"),
    ]  # another tool's, in the same dir
    caplog.set_level("INFO", logger="keras_ft.data.token_cache")
    second = cache_tokenized(*cached_run(tmp_path, tokenizers[0], cache)[:2], tokenizers[0])
    assert second[2]["cache"]["hit"] is True
    assert_same_tokens(second, first)
    assert [p.exists() for p in stale] == [False] * 3
    assert [p.exists() for p in kept] == [True] * 3
    removals = [r for r in caplog.records if r.getMessage().startswith("Removing ")]
    assert sorted(r.getMessage().split(":")[0] for r in removals) == sorted(
        f"Removing {p}" for p in stale
    )
    assert {r.levelname for r in removals} == {"INFO"}


def test_a_run_killed_while_tokenizing_leaves_nothing_a_later_run_keeps(
    tmp_path, tokenizers, caplog
):
    # A real `kill -9` in the middle of tokenization (the run SIGKILLs itself
    # at the 10th example): its `.KEY.PID.tmp` dir is left behind; the next
    # run removes it and tokenizes to the same tokens as a fresh run.
    import subprocess
    import sys

    write_jsonl(tmp_path / "d.jsonl", pairs("How do I boil an egg ", 30))
    (tmp_path / "spm.model").write_bytes(tokenizers[0].keras_tokenizer.proto)
    script = f"""
import os, signal, keras_hub
from pathlib import Path
from keras_ft.data import split, token_cache
from keras_ft.config import Config
from keras_ft.templates import get_template
from keras_ft.data.tokenizer import TextTokenizer
tokenizer = TextTokenizer(keras_hub.models.GemmaTokenizer(
    proto=Path({str(tmp_path / "spm.model")!r}).read_bytes()))
seen, tokenize = [], token_cache.tokenize_example
def tokenize_then_die(*args):
    seen.append(1)
    if len(seen) == 10:
        os.kill(os.getpid(), signal.SIGKILL)
    return tokenize(*args)
token_cache.tokenize_example = tokenize_then_die
cfg = Config(data=({str(tmp_path / "d.jsonl")!r},), sequence_length=64,
             tokenized_cache_dir={str(tmp_path / "cache")!r})
token_cache.cache_tokenized(cfg, get_template(cfg.template), tokenizer)
"""
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    stderr = child.communicate(timeout=600)[1]
    assert child.returncode == -9, stderr[-3000:]
    cfg = Config(
        data=(str(tmp_path / "d.jsonl"),),
        sequence_length=64,
        tokenized_cache_dir=str(tmp_path / "cache"),
    )
    key = token_cache.cache_key(cfg, get_template(cfg.template), tokenizers[0])
    left = list((tmp_path / "cache").iterdir())
    assert [p.name for p in left] == [f".{key}.{child.pid}.tmp"]
    caplog.set_level("INFO", logger="keras_ft.data.token_cache")
    cfg, template, rebuilt = cached_run(tmp_path, tokenizers[0])
    assert not left[0].exists()
    assert any(r.levelname == "INFO" and str(left[0]) in r.getMessage() for r in caplog.records)
    assert rebuilt[2]["cache"]["hit"] is False
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [
        Path(rebuilt[2]["cache"]["path"]).name
    ]
    fresh = cache_tokenized(
        dataclasses.replace(cfg, tokenized_cache_dir=""), template, tokenizers[0]
    )
    assert_same_tokens(rebuilt, fresh)


@pytest.mark.parametrize("theirs_ok", [True, False])
def test_concurrent_runs_with_the_same_key_use_one_entry(
    tmp_path, tokenizers, caplog, monkeypatch, theirs_ok
):
    # Another run with the same key publishes the entry while this one is
    # tokenizing: this run's rename onto it fails, and it uses their copy once
    # that checks out, or replaces it (with a warning) if it does not.
    import shutil

    cfg, template, first = cached_run(tmp_path, tokenizers[0])
    entry = Path(first[2]["cache"]["path"])
    shutil.copytree(entry, tmp_path / "theirs")
    shutil.rmtree(entry)
    tokenize_split, published = token_cache.tokenize_split, {}

    def tokenize_while_the_other_run_publishes(*args):
        result = tokenize_split(*args)
        shutil.copytree(tmp_path / "theirs", entry)
        if not theirs_ok:
            truncate(entry / "data.tokens.bin")
        published["inode"] = entry.stat().st_ino
        return result

    monkeypatch.setattr(token_cache, "tokenize_split", tokenize_while_the_other_run_publishes)
    caplog.set_level("INFO", logger="keras_ft.data.token_cache")
    second = cache_tokenized(cfg, template, tokenizers[0])
    assert published and second[2]["cache"]["hit"] is False
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    if theirs_ok:
        assert entry.stat().st_ino == published["inode"]  # theirs stays
        assert ("INFO", f"Another run cached {entry} first; using its copy.") in messages
    else:
        assert entry.stat().st_ino != published["inode"]  # ours replaced it
        assert any(
            level == "WARNING"
            and f"Replacing the token cache entry {entry}: data.tokens.bin holds" in message
            for level, message in messages
        )
    assert_same_tokens(second, first)
    monkeypatch.undo()
    assert_same_tokens(token_cache.load_token_split(entry), first)
    assert sorted(p.name for p in entry.parent.iterdir()) == [entry.name]


@pytest.mark.parametrize("cache", [False, True])
def test_every_example_cut_off_names_sequence_length(tmp_path, tokenizers, cache):
    long = [
        {"prompt": f"Explain {i}. " + "Explain. " * 40, "completion": "Paris."} for i in range(5)
    ]
    path = write_jsonl(tmp_path / "d.jsonl", long)
    cfg = Config(
        data=(path,),
        sequence_length=24,
        validation_fraction=0.0,
        tokenized_cache_dir=str(tmp_path / "cache") if cache else "",
    )
    with pytest.raises(
        ValueError,
        match=r"all 5 were dropped .* `sequence_length`.*"
        r"Received: sequence_length=24",
    ):
        cache_tokenized(cfg, get_template(cfg.template), tokenizers[0])


BITEXT = "bitext-customer-support/Bitext_Sample_Customer_Support_Training_Dataset.csv"


def test_keep_matching_keeps_only_the_numbered_bitext_answers(shared_data):
    cfg = Config(
        data=(str(shared_data / BITEXT),),
        fields="context=",
        keep_matching=r"response=(?m)^1\. ",
        num_examples=300,
        validation_fraction=0.1,
    )
    train, validation, report = load_examples(cfg)
    assert (len(train), len(validation)) == (270, 30)
    # The filter runs before `num_examples`: 300 kept, the dropped ones counted.
    assert report.num_kept == 300 and report.num_dropped_by_filter > 0
    assert report.num_seen == report.num_kept + report.num_dropped_by_filter
    assert "dropped by keep_matching" in report.summary()
    assert all(
        any(line.startswith("1. ") for line in e.messages[-1].content.splitlines())
        for e in train + validation
    )
    unfiltered = load_examples(dataclasses.replace(cfg, keep_matching=""))[2]
    assert unfiltered.num_dropped_by_filter == 0


def test_keep_matching_field_missing_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", pairs("q", 3) + [{"prompt": "p", "response": "r"}])
    cfg = Config(data=(path,), keep_matching="completion=q", validation_fraction=0.25)
    with pytest.raises(DataError) as info:
        load_examples(cfg)
    assert info.value.location == f"{path}:4" and info.value.field == "completion"
    train, validation, report = load_examples(dataclasses.replace(cfg, skip_bad_records=True))
    assert report.skipped == {"missing_field": 1} and len(train) + len(validation) == 3


@pytest.mark.parametrize(
    "text, match",
    [("response", "FIELD=REGEX"), ("=x", "FIELD=REGEX"), ("response=(", "invalid regular")],
)
def test_bad_keep_matching_names_the_config_field(tmp_path, text, match):
    path = write_jsonl(tmp_path / "d.jsonl", pairs("q", 3))
    with pytest.raises(ValueError, match=match):
        load_examples(Config(data=(path,), keep_matching=text))


def test_data_split_writes_the_runs_split_and_reads_back_equal(shared_data, tmp_path):
    from click.testing import CliRunner

    from keras_ft.cli.data import main

    news = "news-category-huffpost/News_Category_Dataset_v3.first10000.jsonl"
    flags = [
        "--data",
        str(shared_data / news),
        "--fields",
        "prompt=headline+short_description,label=category",
        "--num-examples",
        "200",
        "--validation-fraction",
        "0.1",
        "--seed",
        "5",
    ]
    out = tmp_path / "split"
    result = CliRunner().invoke(main, ["split", *flags, "--split-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 180 training examples" in result.output
    cfg = Config(
        data=(str(shared_data / news),),
        fields="prompt=headline+short_description,label=category",
        num_examples=200,
        validation_fraction=0.1,
        seed=5,
    )
    train, validation, _ = load_examples(cfg)
    again, held, report = load_examples(
        Config(
            data=(str(out / "train.jsonl"),),
            validation_data=str(out / "validation.jsonl"),
            shuffle=False,
        )
    )
    # The same examples in the same order, labels kept: a search may split
    # train.jsonl again without ever reading validation.jsonl.
    assert [(e.messages, e.label) for e in again] == [(e.messages, e.label) for e in train]
    assert [(e.messages, e.label) for e in held] == [(e.messages, e.label) for e in validation]
    assert report.num_overlap_removed == 0 and len(set(report.labels)) > 5
    first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert first["source"] == train[0].source and first["label"] == train[0].label


def test_a_labelled_example_with_a_system_prompt_keeps_both_in_the_split_file(tmp_path):
    record = {"prompt": "Headline", "label": "SPORTS", "system": "Classify the news."}
    path = write_jsonl(tmp_path / "d.jsonl", [record, {**record, "prompt": "Other"}])
    cfg = Config(data=(path,), validation_fraction=0.5, shuffle=False)
    split.write_split(cfg, tmp_path / "split")
    train, _, _ = load_examples(cfg)
    again, _, _ = load_examples(
        Config(data=(str(tmp_path / "split/train.jsonl"),), shuffle=False, validation_fraction=0)
    )
    assert [(e.messages, e.label) for e in again] == [(e.messages, e.label) for e in train]
    assert train[0].messages[0].role == "system" and train[0].label == "SPORTS"
