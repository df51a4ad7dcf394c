"""Fuzz every command line with bad invocations: each must fail cleanly.

A seeded generator builds, for EVERY subcommand (`keras_ft.run`, `evaluate`,
`generate`, `export gguf`, `convert gguf`, `compare`, `data stats`), at least
`KERAS_FT_FUZZ_CASES` (default 300) invocations that are each wrong in one
way: a malformed data file of every supported format, a bad flag value (NaN,
Inf, out of range, not a number), an unknown flag, a bad choice, a missing or
unreadable path, a broken experiment YAML. A shorter fixed list loads real
(tiny) models: adapters on the wrong preset, corrupt preset files, truncated
GGUF files.

Every invocation runs in-process through click's CliRunner (exceptions
caught, so a traceback shows as `result.exception` not being SystemExit) and
must:
  * exit with code 1 or 2 (click's error and usage-error codes);
  * print a one-paragraph error message without a traceback or exception
    repr, naming the file, line, field or setting that is wrong;
  * create, change or delete no file outside its own output directory (the
    inputs and the working directory are hashed before and after; HOME and
    the keras_ft / keras / kagglehub caches point into the test's tmp dir).

The seed is printed (and named in every failure); set KERAS_FT_FUZZ_SEED to
replay a run. Failures are collected per subcommand and reported together,
one example invocation and its output per failing class.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import sys
import time
import typing
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from keras_ft.config import Config

SEED = int(os.environ.get("KERAS_FT_FUZZ_SEED") or random.SystemRandom().randrange(10**6))
CASES = int(os.environ.get("KERAS_FT_FUZZ_CASES") or 300)
print(f"\ntest_cli_fuzz: KERAS_FT_FUZZ_SEED={SEED} KERAS_FT_FUZZ_CASES={CASES}", file=sys.stderr)

GOOD_RECORDS = [
    {"prompt": f"How do I do thing {i}?", "completion": f"1. Step {i}."} for i in range(12)
]
BAD_NUMBERS = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "Infinity",
    "1e999",
    "-1",
    "-7",
    "-0.5",
    "abc",
    "",
    "1,5",
    "0x10",
    "--",
    "1e",
    "3 4",
]
UNKNOWN_FLAGS = [
    "--frobnicate",
    "--lora-rnak",
    "--learning_rate",
    "--data-weight",
    "--epoch",
    "--no-such-flag",
    "-Z",
    "--output",
    "--presett",
    "--seedd",
]


# ------------------------------------------------------------------ fixtures


@dataclasses.dataclass
class World:
    root: Path
    inputs: Path
    cwd: Path
    presets: dict  # name -> preset dir (good)
    corrupt: dict  # kind -> corrupt preset dir or file
    adapter: Path  # a tiny-Gemma adapter file (.lora.h5)
    adapter_dir: Path  # its directory (adapter_config.json beside it)
    bad_adapters: dict  # kind -> broken adapter file
    good_data: Path
    bad_data: dict  # kind -> (path, mention)
    bad_yaml: dict  # kind -> (path, mention)
    ggufs: dict  # kind -> bad .gguf file
    chat_template: Path
    unreadable: dict  # kind -> a path that exists in some form but cannot be read
    counter: list = dataclasses.field(default_factory=lambda: [0])

    def out(self) -> Path:
        self.counter[0] += 1
        return self.root / "out" / str(self.counter[0])


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def _parquet_bytes(columns: dict) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


def _bad_data_files(d: Path) -> dict:
    """kind -> (path, a string the error must name)."""
    good = _jsonl(GOOD_RECORDS)
    parquet = _parquet_bytes({"prompt": ["a", "b"], "completion": ["c", "d"]})
    files = {
        "jsonl_broken_line": ("broken.jsonl", good[:200] + '{"prompt": "x", "compl\n' + good[200:]),
        "jsonl_not_object": ("list_line.jsonl", good + "[1, 2, 3]\n"),
        "jsonl_wrong_type": ("wrong_type.jsonl", '{"prompt": "P", "completion": 3}\n'),
        "jsonl_no_fields": ("no_fields.jsonl", '{"foo": "a", "bar": "b"}\n' * 3),
        "jsonl_empty": ("empty.jsonl", ""),
        "jsonl_blank_lines": ("blank.jsonl", "\n\n   \n"),
        "jsonl_utf16": ("utf16.jsonl", good.encode("utf-16")),
        "jsonl_utf32": ("utf32.jsonl", good.encode("utf-32")),
        "jsonl_binary": ("binary.jsonl", bytes(range(256)) * 8),
        "jsonl_latin1": (
            "latin1.jsonl",
            '{"prompt": "caf\xe9", "completion": "x"}\n'.encode("latin-1"),
        ),
        "jsonl_gz_garbage": ("garbage.jsonl.gz", b"\x1f\x8b\x08\x00garbage-not-deflate"),
        "json_truncated": ("truncated.json", json.dumps(GOOD_RECORDS)[:150]),
        "json_scalar": ("scalar.json", "42"),
        "json_empty": ("empty.json", ""),
        "json_bad_element": ("bad_element.json", json.dumps(GOOD_RECORDS[:2] + [[1, 2]])),
        "json_utf16": ("utf16.json", json.dumps(GOOD_RECORDS).encode("utf-16")),
        "csv_bad_quote": ("bad_quote.csv", 'prompt,completion\n"a,b\nc,d\n' + "x" * 50),
        "csv_missing_columns": ("missing_columns.csv", "foo,bar\n1,2\n3,4\n"),
        "csv_short_row": ("short_row.csv", "prompt,completion\na,b\nc\n"),
        "csv_empty": ("empty.csv", ""),
        "csv_header_only": ("header_only.csv", "prompt,completion\n"),
        "csv_binary": ("binary.csv", b"\x00\x01\x02\xff\xfe" * 100),
        "csv_utf16": ("utf16.csv", "prompt,completion\na,b\n".encode("utf-16")),
        "parquet_garbage": ("garbage.parquet", b"PAR1" + os.urandom(64) + b"PAR1"),
        "parquet_truncated": ("truncated.parquet", parquet[: len(parquet) // 2]),
        "parquet_empty": ("empty.parquet", b""),
        "parquet_text": ("text.parquet", "prompt,completion\na,b\n"),
        "parquet_wrong_columns": ("wrong_columns.parquet", _parquet_bytes({"x": [1, 2]})),
        "unknown_suffix": ("data.txt", good),
        "no_suffix": ("datafile", good),
        "empty_dir": ("empty_dir/", None),
    }
    out = {}
    for kind, (name, content) in files.items():
        path = d / name
        if content is None:
            path.mkdir(parents=True)
        else:
            _write(path, content)
        out[kind] = (path, path.name.rstrip("/"))
    return out


def _bad_yaml_files(d: Path) -> dict:
    files = {
        "not_yaml": ("not_yaml.yaml", "lora_rank: [1, 2\nfoo: : :\n", "not_yaml.yaml"),
        "a_list": ("a_list.yaml", "- lora_rank\n- 4\n", "a_list.yaml"),
        "unknown_key": ("unknown_key.yaml", "lora_rnak: 4\n", "lora_rnak"),
        "nan_value": ("nan_value.yaml", "temperature: .nan\n", "temperature"),
        "inf_value": ("inf_value.yaml", "learning_rate: .inf\n", "learning_rate"),
        "negative": ("negative.yaml", "batch_size: -2\n", "batch_size"),
        "wrong_type": ("wrong_type.yaml", "lora_rank: four\n", "lora_rank"),
        "binary": ("binary.yaml", b"\xff\xfe\x00\x01garbage\x00", "binary.yaml"),
        "utf16": ("utf16.yaml", "lora_rank: 4\n".encode("utf-16"), "utf16.yaml"),
    }
    out = {}
    for kind, (name, content, mention) in files.items():
        out[kind] = (_write(d / name, content), mention)
    return out


def _gguf_file(path: Path, arch: str, tensor: bool = True) -> Path:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(path, arch=arch)
    writer.add_block_count(2)
    if tensor:
        writer.add_tensor("token_embd.weight", np.ones((8, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _bad_ggufs(d: Path) -> dict:
    d.mkdir(parents=True)
    good = _gguf_file(d / "g3_full.gguf.src", "gemma3").read_bytes()
    out = {
        "truncated": _write(d / "truncated.gguf", good[: len(good) // 2]),
        "header_only": _write(d / "header_only.gguf", good[:8]),
        "empty": _write(d / "empty.gguf", b""),
        "garbage": _write(d / "garbage.gguf", b"GGUF" + os.urandom(200)),
        "not_gguf": _write(d / "not_gguf.gguf", "hello, I am text\n"),
        "llama": _gguf_file(d / "llama.gguf", "llama"),
        "gemma3_no_tensors": _gguf_file(d / "gemma3_bare.gguf", "gemma3", tensor=False),
    }
    (d / "g3_full.gguf.src").unlink()
    return out


def _corrupt_presets(d: Path, good: Path) -> dict:
    def copy(name):
        target = d / name
        shutil.copytree(good, target)
        return target

    out = {}
    p = copy("truncated_weights")
    weights = p / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    out["truncated_weights"] = (p, "model.weights.h5")
    p = copy("garbage_weights")
    (p / "model.weights.h5").write_bytes(os.urandom(4096))
    out["garbage_weights"] = (p, "model.weights.h5")
    p = copy("config_not_json")
    (p / "config.json").write_text('{"module": "keras_hub.src.models", "class_na')
    out["config_not_json"] = (p, "config.json")
    p = copy("config_foreign_class")
    config = json.loads((p / "config.json").read_text())
    config.update({"module": "os", "class_name": "system", "registered_name": "os>system"})
    (p / "config.json").write_text(json.dumps(config))
    out["config_foreign_class"] = (p, "config.json")
    p = copy("config_unknown_class")
    config = json.loads((p / "config.json").read_text())
    config.update(
        {
            "module": "keras_hub.src.models.nothing",
            "class_name": "NoSuchBackbone",
            "registered_name": "keras_hub>NoSuchBackbone",
        }
    )
    (p / "config.json").write_text(json.dumps(config))
    out["config_unknown_class"] = (p, "config.json")
    p = copy("no_weights")
    (p / "model.weights.h5").unlink()
    out["no_weights"] = (p, "model.weights.h5")
    p = copy("empty_config")
    (p / "config.json").write_text("")
    out["empty_config"] = (p, "config.json")
    p = d / "empty_preset_dir"
    p.mkdir()
    out["empty_dir"] = (p, p.name)
    return out


def _adapter(directory: Path, preset: Path) -> Path:
    import keras_hub

    from keras_ft.model.lora import enable_lora, save_adapter

    causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
    cfg = Config(preset=str(preset), lora_rank=2, template="gemma")
    enable_lora(causal_lm.backbone, cfg.lora_rank)
    return save_adapter(causal_lm, directory, cfg)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_gemma, tiny_gemma3, tiny_llama3):
    root = tmp_path_factory.mktemp("fuzz")
    inputs = root / "inputs"
    presets = {}
    for name, src in (("gemma", tiny_gemma), ("gemma3", tiny_gemma3), ("llama3", tiny_llama3)):
        presets[name] = inputs / "presets" / f"tiny_{name}"
        shutil.copytree(src, presets[name])
    adapter = _adapter(inputs / "adapter_gemma", presets["gemma"])
    bad_adapters = {
        "truncated": _write(
            inputs / "bad_adapters" / "truncated.lora.h5",
            adapter.read_bytes()[: adapter.stat().st_size // 2],
        ),
        "garbage": _write(inputs / "bad_adapters" / "garbage.lora.h5", os.urandom(2048)),
        "empty": _write(inputs / "bad_adapters" / "empty.lora.h5", b""),
    }
    meta_dir = inputs / "bad_adapters" / "bad_meta"
    shutil.copytree(adapter.parent, meta_dir)
    (meta_dir / "adapter_config.json").write_text("{not json")
    bad_adapters["meta_not_json"] = meta_dir / adapter.name
    cwd = root / "cwd"
    cwd.mkdir()
    _write(cwd / "notes.txt", "the working directory must stay as it is\n")
    w = World(
        root=root,
        inputs=inputs,
        cwd=cwd,
        presets=presets,
        corrupt=_corrupt_presets(inputs / "corrupt", presets["gemma"]),
        adapter=adapter,
        adapter_dir=adapter.parent,
        bad_adapters=bad_adapters,
        good_data=_write(inputs / "data" / "good.jsonl", _jsonl(GOOD_RECORDS)),
        bad_data=_bad_data_files(inputs / "bad_data"),
        bad_yaml=_bad_yaml_files(inputs / "yaml"),
        ggufs=_bad_ggufs(inputs / "gguf"),
        chat_template=_write(inputs / "chat.jinja", "{{ messages }}"),
        unreadable=_unreadable_paths(inputs / "unreadable", inputs / "data" / "good.jsonl"),
    )
    return w


def _unreadable_paths(d: Path, good: Path) -> dict:
    d.mkdir(parents=True)
    (d / "dangling.jsonl").symlink_to(d / "gone.jsonl")
    (d / "loop.jsonl").symlink_to(d / "loop.jsonl")
    out = {
        "file_as_parent": str(good / "child.jsonl"),
        "dangling_link": str(d / "dangling.jsonl"),
        "link_loop": str(d / "loop.jsonl"),
        "nul_byte": str(d / "a\x00b.jsonl"),
    }
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        locked = _write(d / "locked.jsonl", _jsonl(GOOD_RECORDS))
        locked.chmod(0)
        out["no_permission"] = str(locked)
    return out


@pytest.fixture()
def isolated(world, monkeypatch):
    """HOME, caches and cwd inside the fuzz tmp dir; no network probes."""
    home = world.root / "home"
    home.mkdir(exist_ok=True)
    for name, value in {
        "HOME": home,
        "KERAS_FT_CACHE": home / "keras_ft",
        "KERAS_HOME": home / "keras",
        "KAGGLEHUB_CACHE": home / "kagglehub",
        "HF_HOME": home / "hf",
        "XDG_CACHE_HOME": home / "cache",
        "TFDS_DATA_DIR": home / "tfds",
    }.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("KERAS_FT_OFFLINE", "1")
    monkeypatch.chdir(world.cwd)
    return world


# ------------------------------------------------------------------- harness


@dataclasses.dataclass
class Case:
    command: str  # run, evaluate, generate, export, convert, compare, data
    kind: str  # the failure class, e.g. "bad_number:--temperature"
    args: list
    mentions: tuple  # the message must name one of these
    out: Path | None = None  # the invocation's own output (may change)

    def shell(self) -> str:
        name = self.command if isinstance(self.command, str) else self.command.name
        return f"python -m keras_ft.{name} " + shlex.join(map(str, self.args))


def _entry(command):
    from keras_ft.cli import compare, convert, data, evaluate, export, generate, run

    if isinstance(command, click.Command):  # the harness's own self-test
        return command

    return {
        "run": run.main,
        "evaluate": evaluate.main,
        "generate": generate.main,
        "export": export.main,
        "convert": convert.main,
        "compare": compare.main,
        "data": data.main,
    }[command]


def _snapshot(*roots: Path) -> dict:
    files = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file():
                files[str(path)] = "dir" if path.is_dir() else "other"
            else:
                files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


REPR_DUMP = re.compile(
    r"\b\w*(Error|Exception|Warning)\(|<[\w.]+ object at 0x|"
    r"File \"[^\"]+\", line \d+"
)
ERROR_LINE = re.compile(r"^(Error:|error:|[\w. -]+: error:)", re.MULTILINE)


def _problems(case: Case, result, before: dict, after: dict) -> list[str]:
    problems = []
    output = result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        problems.append(
            f"uncaught {type(result.exception).__name__}: {str(result.exception)[:300]}"
        )
    elif result.exit_code not in (1, 2):
        problems.append(f"exit code {result.exit_code} (expected 1 or 2)")
    if "Traceback" in output:
        problems.append("a traceback in the output")
    starts = [m.start() for m in ERROR_LINE.finditer(output)]
    if not problems:
        if not starts:
            problems.append("no error message ('Error: ...') in the output")
        else:
            message = output[starts[-1] :].strip()
            if "\n\n" in message:
                problems.append("the error message is not one paragraph (a blank line)")
            elif len(message) > 2500:
                problems.append(
                    f"the error message is not one paragraph ({len(message)} characters)"
                )
            dump = REPR_DUMP.search(message)
            if dump:
                problems.append(f"an exception repr in the message: {dump.group(0)!r}")
            flat = " ".join(message.split())
            wanted = [str(m) for m in case.mentions]
            variants = set()
            for m in wanted:  # a flag may be named as its Config field
                variants |= {m, m.lstrip("-").replace("-", "_") if "-" in m[2:] else m}
            if not any(v and v in flat for v in variants):
                problems.append(f"the message names none of {wanted}")
    allowed = str(case.out) if case.out else None
    changed = sorted(
        p
        for p in set(before) | set(after)
        if before.get(p) != after.get(p)
        and not (allowed and (p == allowed or p.startswith(allowed + os.sep)))
    )
    if changed:
        problems.append(f"files outside the output dir changed: {changed[:5]}")
    return problems


def _run_cases(world: World, cases: list[Case], monkeypatch, budget_s: float | None = None):
    import keras_ft.evaluation.compare

    def no_worker(*args, **kwargs):  # every case is invalid: nothing may launch
        raise AssertionError("compare launched a worker process for an invalid invocation")

    monkeypatch.setattr(keras_ft.evaluation.compare.subprocess, "run", no_worker)
    failures = {}
    start = time.perf_counter()
    for case in cases:
        before = _snapshot(world.inputs, world.cwd)
        result = CliRunner().invoke(
            _entry(case.command), [str(a) for a in case.args], catch_exceptions=True
        )
        after = _snapshot(world.inputs, world.cwd)
        problems = _problems(case, result, before, after)
        if problems:
            name = case.command if isinstance(case.command, str) else case.command.name
            failures.setdefault(f"{name} {case.kind}", []).append((case, problems, result.output))
        if not set(after) <= set(before) | {str(p) for p in _under(case.out)}:
            _restore(world, before)
    elapsed = time.perf_counter() - start
    return failures, elapsed


def _under(path):
    return [] if path is None else [path, *Path(path).rglob("*")] if Path(path).exists() else []


def _restore(world, before):
    """Removes files a failed case left behind, so later cases see the same inputs."""
    for root in (world.inputs, world.cwd):
        for path in sorted(root.rglob("*"), reverse=True):
            if str(path) not in before:
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def _report(command: str, cases: list[Case], failures: dict, elapsed: float) -> str:
    lines = [
        f"{command}: {sum(map(len, failures.values()))} of {len(cases)} bad "
        f"invocations failed uncleanly in {len(failures)} classes "
        f"(KERAS_FT_FUZZ_SEED={SEED}, {elapsed:.0f} s):"
    ]
    for kind, items in sorted(failures.items()):
        case, problems, output = items[0]
        tail = "\n      ".join(output.strip().splitlines()[-6:])
        lines.append(
            f"  [{kind}] x{len(items)}: {'; '.join(problems)}\n    $ {case.shell()}\n      {tail}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ generators


def _config_numeric_flags():
    """(flag, field, tp) for every numeric Config field: run, compare, evaluate."""
    hints = typing.get_type_hints(Config)
    out = []
    for field in dataclasses.fields(Config):
        tp = hints[field.name]
        if tp in (int, float) or (
            typing.get_origin(tp) is tuple and typing.get_args(tp)[0] in (int, float)
        ):
            out.append(("--" + field.name.replace("_", "-"), field.name, tp))
    return out


POSITIVE = {
    "lora_rank",
    "epochs",
    "batch_size",
    "sequence_length",
    "max_new_tokens",
    "learning_rate",
    "top_k",
    "temperature",
    "gradient_accumulation_steps",
    "keep_checkpoints",
    "data_weights",
}
OUT_OF_RANGE = {
    "top_p": ["0", "1.5", "-0.1", "2"],
    "validation_fraction": ["1", "1.5", "-0.1"],
    "seed": ["-1", "4294967296", str(2**64)],
}


def _bad_value(rng: random.Random, name: str, tp) -> str:
    """A value of the `name` field that is always invalid."""
    choices = [v for v in BAD_NUMBERS if v not in ("",)]
    if tp is int or (typing.get_origin(tp) is tuple and typing.get_args(tp)[0] is int):
        choices += ["1.5", "3.0", "1e3"]
    if name in POSITIVE:
        choices += ["0", "-0", "0.0"] if tp is not int else ["0", "-0"]
    choices += OUT_OF_RANGE.get(name, [])
    value = rng.choice(choices)
    if tp is not int and value in ("1.5", "3.0", "1e3"):
        value = "nan"
    return value


def _mutate_common(
    rng,
    world: World,
    base: list,
    out: Path,
    command: str,
    numeric: list,
    choices: dict,
    paths: dict,
    data_flag: str | None,
    config_flag: bool = True,
) -> Case:
    """One invalid variation of `base`, for a subcommand with these options.

    numeric: [(flag, name, tp, bad_values_or_None)]
    choices: {flag: [invalid values]}
    paths: {flag: existing-file kind} flags that take a path
    """
    kinds = ["number"] * 5 + ["unknown_flag"] * 2 + ["choice"] * 2 + ["missing_path"] * 2
    kinds += ["dir_as_file", "unreadable_path"]
    if data_flag:
        kinds += ["bad_data"] * 5
    if config_flag:
        kinds += ["bad_yaml"] * 2
    kind = rng.choice(
        [
            k
            for k in kinds
            if (k != "number" or numeric)
            and (k != "choice" or choices)
            and (k not in ("missing_path", "dir_as_file", "unreadable_path") or paths)
        ]
    )
    args = list(base)
    if kind == "number":
        flag, name, tp, values = rng.choice(numeric)
        value = rng.choice(values) if values else _bad_value(rng, name, tp)
        return Case(command, f"bad_number:{flag}", _set(args, flag, value), (flag, name), out)
    if kind == "unknown_flag":
        flag = rng.choice(UNKNOWN_FLAGS)
        # after a group's subcommand (else it is refused as the group's own option)
        first = 1 if command in ("export", "convert", "data") else 0
        pos = rng.randrange(first, len(args) + 1)
        extra = [flag, "1"] if rng.random() < 0.5 else [flag]
        while pos and str(args[pos - 1]).startswith("-") and pos < len(args):
            pos += 1  # do not split a flag from its value
        return Case(command, "unknown_flag", args[:pos] + extra + args[pos:], (flag,), out)
    if kind == "choice":
        flag = rng.choice(sorted(choices))
        value = rng.choice(choices[flag])
        # a field mapping may instead be refused naming the column it maps
        named = tuple(re.findall(r"=(\w+)", value)) if flag == "--fields" else ()
        return Case(
            command,
            f"bad_choice:{flag}",
            _set(args, flag, value),
            (flag, flag[2:].replace("-", "_"), value, *named),
            out,
        )
    if kind == "missing_path":
        flag = rng.choice(sorted(paths))
        missing = (
            world.inputs
            / "missing"
            / rng.choice(["nope.jsonl", "nope.h5", "nope", "nope.yaml", "nope.gguf"])
        )
        return Case(
            command,
            f"missing_path:{flag}",
            _set(args, flag, missing),
            (missing.name, str(missing)),
            out,
        )
    if kind == "unreadable_path":
        flag = rng.choice(sorted(paths))
        name = rng.choice(sorted(world.unreadable))
        path = world.unreadable[name]
        shown = Path(path).name.replace("\0", "\\x00")  # a NUL, shown escaped or raw
        return Case(
            command,
            f"unreadable_path:{name}:{flag}",
            _set(args, flag, path),
            (shown, Path(path).name, flag),
            out,
        )
    if kind == "dir_as_file":
        flag = rng.choice(sorted(paths))
        directory = world.inputs / "bad_data" / "empty_dir"
        return Case(
            command, f"dir_as_file:{flag}", _set(args, flag, directory), (directory.name,), out
        )
    if kind == "bad_data":
        name = rng.choice(sorted(world.bad_data))
        path, mention = world.bad_data[name]
        return Case(command, f"bad_data:{name}", _set(args, data_flag, path), (mention,), out)
    name = rng.choice(sorted(world.bad_yaml))
    path, mention = world.bad_yaml[name]
    return Case(command, f"bad_yaml:{name}", _set(args, "--config", path), (mention,), out)


def _set(args: list, flag: str, value) -> list:
    """args with `flag value` (replacing a value it had); positional: '@N'."""
    args = list(args)
    if flag.startswith("@"):
        args[int(flag[1:])] = value
        return args
    if flag in args:
        args[args.index(flag) + 1] = value
        return args
    return args + [flag, value]


def gen_run(rng, world: World) -> Case:
    out = world.out()
    base = [
        "--preset",
        world.presets["gemma"],
        "--data",
        world.good_data,
        "--output-dir",
        out,
        "--max-steps",
        "1",
        "--tokenized-cache-dir",
        "",
        "--sequence-length",
        "32",
        "--sample-prompts",
        "hi",
        "--max-new-tokens",
        "2",
    ]
    numeric = [
        (f, n, tp, None) for f, n, tp in _config_numeric_flags() if n not in ("data_weights",)
    ]
    numeric.append(("--data-weights", "data_weights", tuple, ["nan", "inf", "-1", "0"]))
    choices = {
        "--sampler": ["greedyy", "nucleus", ""],
        "--dtype": ["float64", "float16", "fp8"],
        "--template": ["gema", "llama", "nosuch"],
        "--lr-schedule": ["cosin", "step"],
        "--quantize": ["int3", "fp4"],
        "--lora-targets": ["qkv", "everything"],
    }
    if rng.random() < 0.05:  # an output dir keras_ft did not write, or a file: untouched
        target = rng.choice(
            [world.presets["llama3"], world.inputs / "bad_data", world.good_data, world.cwd]
        )
        return Case(
            "run",
            f"foreign_output_dir:{target.name}",
            _set(base, "--output-dir", target),
            (target.name, str(target), "--output-dir", "output_dir"),
            None,
        )
    case = _mutate_common(
        rng,
        world,
        base,
        out,
        "run",
        numeric,
        choices,
        {"--data": "file", "--config": "file", "--preset": "dir"},
        "--data",
    )
    if case.kind == "bad_number:--data-weights":
        case.args = case.args + ["--data", world.good_data]  # one weight per spec
    return case


def gen_compare(rng, world: World) -> Case:
    out = world.out()
    presets = f"{world.presets['gemma']},{world.presets['llama3']}"
    base = [
        "--presets",
        presets,
        "--data",
        world.good_data,
        "--output-dir",
        out,
        "--max-steps",
        "1",
        "--tokenized-cache-dir",
        "",
        "--timeout",
        "30",
    ]
    numeric = [
        (f, n, tp, None) for f, n, tp in _config_numeric_flags() if n not in ("data_weights",)
    ]
    numeric.append(("--timeout", "timeout", float, ["nan", "-1", "0", "-inf", "abc"]))
    choices = {
        "--sampler": ["greedyy"],
        "--dtype": ["float64"],
        "--template": ["gema"],
        "--lr-schedule": ["cosin"],
        "--quantize": ["int3"],
    }
    if rng.random() < 0.25:
        bad = rng.choice(
            [
                ("foo", "--vary"),
                ("lora_rank=", "--vary"),
                ("nosuchfield=1,2", "nosuchfield"),
                ("lora_rank=a,b", "lora_rank"),
                ("temperature=nan,1", "temperature"),
                ("lora_rank=0,4", "lora_rank"),
                ("seed=-1", "seed"),
                ("=1,2", "--vary"),
            ]
        )
        return Case(
            "compare",
            f"bad_vary:{bad[0].split('=')[0] or '='}",
            _set(base, "--vary", bad[0]),
            (bad[1], "--vary"),
            out,
        )
    if rng.random() < 0.1:
        bad = rng.choice(
            [
                ("--presets", ",", "--presets"),
                ("--templates", "gemma", "--templates"),
                ("--preset", str(world.presets["gemma"]), "--presets"),
                ("--templates", "gemma,gema", "gema"),
            ]
        )
        return Case(
            "compare",
            f"bad_presets:{bad[0]}={bad[1][:6]}",
            _set(base, bad[0], bad[1]),
            (bad[2],),
            out,
        )
    return _mutate_common(
        rng, world, base, out, "compare", numeric, choices, {"--config": "file"}, None
    )


def gen_evaluate(rng, world: World) -> Case:
    out = world.out()
    base = [
        "--adapter",
        world.adapter,
        "--preset",
        world.presets["gemma"],
        "--validation-data",
        world.good_data,
        "--report-dir",
        out,
        "--num-generate",
        "1",
        "--no-latency",
    ]
    ints = [
        ("--skip-examples", "skip_examples", False),
        ("--eval-examples", "eval_examples", False),
        ("--num-generate", "num_generate", True),
        ("--eval-batch-size", "eval_batch_size", True),
        ("--sequence-length", "sequence_length", True),
        ("--max-new-tokens", "max_new_tokens", True),
    ]
    numeric = []
    for flag, name, positive in ints:
        values = ["-1", "-100", "nan", "inf", "abc", "1.5", ""] + (["0"] if positive else [])
        numeric.append((flag, name, int, values))
    choices = {
        "--sampler": ["greedyy", "beam", ""],
        "--checks": ["lenght", "foo,bar", "json,"],
        "--template": ["gema", "nosuch"],
    }
    return _mutate_common(
        rng,
        world,
        base,
        out,
        "evaluate",
        numeric,
        choices,
        {"--adapter": "file", "--validation-data": "file", "--config": "file", "--preset": "dir"},
        "--validation-data",
    )


def gen_generate(rng, world: World) -> Case:
    base = ["--preset", world.presets["gemma"], "--max-new-tokens", "2", "Hello"]
    numeric = [
        ("--max-new-tokens", "max_new_tokens", int, ["0", "-1", "nan", "inf", "abc", "1.5", ""]),
        ("--seed", "seed", int, ["-1", "-5", "4294967296", "nan", "abc", "1.5"]),
    ]
    choices = {"--sampler": ["greedyy", "beam", ""], "--template": ["gema", "nosuch"]}
    return _mutate_common(
        rng,
        world,
        base,
        None,
        "generate",
        numeric,
        choices,
        {"--config": "file", "--preset": "dir", "--adapter": "file"},
        None,
    )


def gen_export(rng, world: World) -> Case:
    out = world.out()
    target = out / "model.gguf"
    base = ["gguf", "--preset", world.presets["gemma3"], target]
    r = rng.random()
    if r < 0.2:
        value = rng.choice(["f64", "nan", "q4", "", "F16 ", "-1"])
        return Case(
            "export", "bad_choice:--outtype", base + ["--outtype", value], ("--outtype",), out
        )
    if r < 0.35:
        flag = rng.choice(UNKNOWN_FLAGS)
        return Case("export", "unknown_flag", base + [flag], (flag,), out)
    if r < 0.5:
        missing = world.inputs / "missing" / rng.choice(["a.lora.h5", "run_dir"])
        return Case(
            "export", "missing_path:--adapter", base + ["--adapter", missing], (missing.name,), out
        )
    if r < 0.6:
        missing = world.inputs / "missing" / "t.jinja"
        return Case(
            "export",
            "missing_path:--chat-template",
            base + ["--chat-template", missing],
            (missing.name,),
            out,
        )
    if r < 0.7:
        directory = world.inputs / "bad_data" / "empty_dir"
        return Case(
            "export",
            "dir_as_file:--chat-template",
            base + ["--chat-template", directory],
            (directory.name,),
            out,
        )
    if r < 0.75:
        return Case("export", "missing:--preset", ["gguf", target], ("--preset",), out)
    if r < 0.8:  # OUT_PATH an existing directory: refused, untouched
        target = rng.choice([world.presets["gemma"], world.cwd])
        return Case(
            "export",
            "out_path_is_dir",
            ["gguf", "--preset", world.presets["gemma3"], target],
            (target.name, "OUT_PATH"),
            None,
        )
    if r < 0.9:
        return Case(
            "export",
            "missing:OUT_PATH",
            ["gguf", "--preset", world.presets["gemma3"]],
            ("OUT_PATH",),
            out,
        )
    return Case(
        "export",
        "unknown_subcommand",
        [rng.choice(["ggfu", "onnx", "--gguf"])],
        ("ggfu", "onnx", "--gguf", "No such command"),
        out,
    )


def gen_convert(rng, world: World) -> Case:
    out = world.out() / "preset"
    r = rng.random()
    if r < 0.45:
        name = rng.choice(sorted(world.ggufs))
        path = world.ggufs[name]
        return Case("convert", f"bad_gguf:{name}", ["gguf", path, out], (path.name,), out.parent)
    if r < 0.55:
        path, mention = world.bad_data[rng.choice(sorted(world.bad_data))]
        if path.is_dir():
            return Case(
                "convert", "dir_as_file:GGUF_PATH", ["gguf", path, out], (mention,), out.parent
            )
        return Case("convert", "not_gguf", ["gguf", path, out], (mention,), out.parent)
    if r < 0.65:
        missing = world.inputs / "missing" / "m.gguf"
        return Case(
            "convert", "missing_path:GGUF_PATH", ["gguf", missing, out], (missing.name,), out.parent
        )
    if r < 0.75:
        value = rng.choice(["float64", "nan", "int8", ""])
        return Case(
            "convert",
            "bad_choice:--outtype",
            ["gguf", world.ggufs["llama"], out, "--outtype", value],
            ("--outtype",),
            out.parent,
        )
    if r < 0.85:
        flag = rng.choice(UNKNOWN_FLAGS)
        return Case(
            "convert",
            "unknown_flag",
            ["gguf", world.ggufs["llama"], out, flag],
            (flag,),
            out.parent,
        )
    if r < 0.93:
        # OUT_DIR exists (an input preset) and no --replace: refused, untouched.
        target = world.presets["gemma"]
        return Case(
            "convert",
            "existing_out_dir",
            ["gguf", world.ggufs["llama"], target],
            (target.name, "llama"),
            None,
        )
    if r < 0.96:  # OUT_DIR an existing file: refused, untouched
        return Case(
            "convert",
            "out_dir_is_file",
            ["gguf", world.ggufs["llama"], world.good_data, "--replace"],
            (world.good_data.name, "OUT_DIR", "llama"),
            None,
        )
    return Case(
        "convert", "missing:OUT_DIR", ["gguf", world.ggufs["llama"]], ("OUT_DIR",), out.parent
    )


def gen_data(rng, world: World) -> Case:
    out = world.out()
    plot = out / "stats.png"
    base = ["stats", "--data", world.good_data, "--no-tokens", "--plot", plot]
    numeric = [
        ("--sequence-length", "sequence_length", int, ["0", "-1", "nan", "abc", "1.5"]),
        ("--num-examples", "num_examples", int, ["-1", "-9", "nan", "abc", "1.5"]),
        ("--seed", "seed", int, ["-1", "4294967296", "nan", "abc"]),
        ("--show", "show", int, ["-1", "-3", "nan", "abc", "1.5"]),
        ("--data-weights", "data_weights", float, ["nan", "inf", "-1", "0", "abc"]),
    ]
    choices = {
        "--template": ["gema", "nosuch"],
        "--fields": ["prompt", "=x", "nosuch=a", "prompt=a,prompt=b", "prompt=zz"],
    }
    r = rng.random()
    if r < 0.06:
        directory = world.inputs / "bad_data" / "empty_dir"
        return Case(
            "data",
            "plot:is_a_dir",
            _set(base, "--plot", directory),
            (directory.name, "--plot"),
            out,
        )
    if r < 0.12:
        plot = out / rng.choice(["stats.txt", "stats.pdf", "stats", "stats.png.jpg"])
        return Case("data", "plot:not_png", _set(base, "--plot", plot), ("--plot",), out)
    if r < 0.16:
        return Case(
            "data",
            "no_subcommand",
            rng.choice([[], ["stat"], ["--data", "x"]]),
            ("stats", "command"),
            out,
        )
    case = _mutate_common(
        rng,
        world,
        base,
        out,
        "data",
        numeric,
        choices,
        {"--data": "file", "--config": "file"},
        "--data",
    )
    if case.kind == "bad_number:--data-weights":
        case.args = case.args + ["--data", world.good_data]
    return case


GENERATORS = {
    "run": gen_run,
    "evaluate": gen_evaluate,
    "generate": gen_generate,
    "export": gen_export,
    "convert": gen_convert,
    "compare": gen_compare,
    "data": gen_data,
}


@pytest.mark.parametrize("command", sorted(GENERATORS))
def test_bad_invocations_fail_cleanly(command, isolated, monkeypatch):
    rng = random.Random(f"{SEED}:{command}")
    cases = [GENERATORS[command](rng, isolated) for _ in range(CASES)]
    assert len(cases) >= 300 or CASES < 300
    failures, elapsed = _run_cases(isolated, cases, monkeypatch)
    print(
        f"{command}: {len(cases)} invocations in {elapsed:.1f} s (KERAS_FT_FUZZ_SEED={SEED})",
        file=sys.stderr,
    )
    assert not failures, _report(command, cases, failures, elapsed)


# ------------------------------------------------- cases that load real models


def model_cases(world: World) -> list[Case]:
    """A fixed list (~30) that gets as far as loading a tiny model."""
    p, c = world.presets, world.corrupt
    cases = []
    for arch in ("llama3", "gemma3"):  # a tiny Gemma adapter on another architecture
        cases.append(
            Case(
                "generate",
                f"mismatched_adapter:{arch}",
                ["--preset", p[arch], "--adapter", world.adapter, "hi"],
                (world.adapter.name, "adapter"),
                None,
            )
        )
        out = world.out()
        cases.append(
            Case(
                "evaluate",
                f"mismatched_adapter:{arch}",
                [
                    "--adapter",
                    world.adapter,
                    "--preset",
                    p[arch],
                    "--validation-data",
                    world.good_data,
                    "--report-dir",
                    out,
                    "--num-generate",
                    "1",
                    "--no-latency",
                ],
                (world.adapter.name, "adapter"),
                out,
            )
        )
    out = world.out()
    cases.append(
        Case(
            "export",
            "mismatched_adapter:gemma3",
            ["gguf", "--preset", p["gemma3"], "--adapter", world.adapter, out / "m.gguf"],
            (world.adapter.name, "adapter"),
            out,
        )
    )
    for kind, path in world.bad_adapters.items():
        cases.append(
            Case(
                "generate",
                f"bad_adapter:{kind}",
                ["--preset", p["gemma"], "--adapter", path, "hi"],
                (path.name, path.parent.name),
                None,
            )
        )
    out = world.out()
    cases.append(
        Case(
            "evaluate",
            "bad_adapter:truncated",
            [
                "--adapter",
                world.bad_adapters["truncated"],
                "--preset",
                p["gemma"],
                "--validation-data",
                world.good_data,
                "--report-dir",
                out,
                "--num-generate",
                "1",
                "--no-latency",
            ],
            (world.bad_adapters["truncated"].name,),
            out,
        )
    )
    for kind, (path, mention) in world.corrupt.items():
        out = world.out()
        cases.append(
            Case(
                "run",
                f"corrupt_preset:{kind}",
                [
                    "--preset",
                    path,
                    "--data",
                    world.good_data,
                    "--output-dir",
                    out,
                    "--max-steps",
                    "1",
                    "--tokenized-cache-dir",
                    "",
                    "--sequence-length",
                    "32",
                ],
                (mention, path.name),
                out,
            )
        )
        if kind in ("truncated_weights", "config_not_json", "config_foreign_class", "empty_dir"):
            cases.append(
                Case(
                    "generate",
                    f"corrupt_preset:{kind}",
                    ["--preset", path, "hi"],
                    (mention, path.name),
                    None,
                )
            )
    out = world.out()
    cases.append(
        Case(
            "export",
            "corrupt_preset:truncated_weights",
            ["gguf", "--preset", c["truncated_weights"][0], out / "m.gguf"],
            ("model.weights.h5",),
            out,
        )
    )
    out = world.out()
    cases.append(
        Case(
            "data",
            "corrupt_preset:config_not_json",
            [
                "stats",
                "--data",
                world.good_data,
                "--preset",
                c["config_not_json"][0],
                "--plot",
                out / "p.png",
            ],
            ("config.json", "config_not_json"),
            out,
        )
    )
    out = world.out()
    cases.append(
        Case(
            "data",
            "corrupt_preset:empty_dir",
            [
                "stats",
                "--data",
                world.good_data,
                "--preset",
                c["empty_dir"][0],
                "--plot",
                out / "p.png",
            ],
            ("empty_preset_dir",),
            out,
        )
    )
    for name in ("truncated", "llama"):
        out = world.out()
        gguf = world.ggufs[name]
        cases.append(
            Case(
                "run",
                f"gguf_preset:{name}",
                [
                    "--preset",
                    gguf,
                    "--data",
                    world.good_data,
                    "--output-dir",
                    out,
                    "--max-steps",
                    "1",
                    "--tokenized-cache-dir",
                    "",
                ],
                (gguf.name,),
                out,
            )
        )
    out = world.out()
    cases.append(
        Case(
            "export",
            "bad_adapter:garbage",
            [
                "gguf",
                "--preset",
                p["gemma"],
                "--adapter",
                world.bad_adapters["garbage"],
                out / "m.gguf",
            ],
            (world.bad_adapters["garbage"].name,),
            out,
        )
    )
    out = world.out()
    utf16 = world.bad_data["jsonl_utf16"][0]
    cases.append(
        Case(
            "export",
            "chat_template_not_utf8",
            ["gguf", "--preset", p["gemma3"], "--chat-template", utf16, out / "m.gguf"],
            (utf16.name, "--chat-template"),
            out,
        )
    )
    out = world.out()  # a run directory whose config.json is broken
    run_dir = world.inputs / "bad_run"
    if not run_dir.exists():
        shutil.copytree(world.adapter_dir, run_dir)
        (run_dir / "config.json").write_text('{"preset": ')
    cases.append(
        Case(
            "evaluate",
            "run_dir_config_not_json",
            [
                "--adapter",
                run_dir,
                "--validation-data",
                world.good_data,
                "--report-dir",
                out,
                "--num-generate",
                "1",
                "--no-latency",
            ],
            ("config.json",),
            out,
        )
    )
    out = world.out()
    cases.append(
        Case(
            "export",
            "unsupported_gguf_export",
            # The tiny Gemma 3 has no post-attention norm, which llama.cpp's
            # gemma3 graph always applies: refused, naming the setting.
            ["gguf", "--preset", p["gemma3"], out / "m.gguf"],
            ("llama.cpp's gemma3 needs use_post_attention_norm",),
            out,
        )
    )
    out = world.out()
    cases.append(
        Case(
            "run",
            "sequence_length_too_short",
            [
                "--preset",
                p["gemma"],
                "--data",
                world.good_data,
                "--output-dir",
                out,
                "--tokenized-cache-dir",
                "",
                "--max-steps",
                "1",
                "--sequence-length",
                "2",
            ],
            ("sequence_length", "--sequence-length"),
            out,
        )
    )
    # a bad data file reached after a real tokenizer load (run and data stats)
    for kind in ("jsonl_broken_line", "csv_bad_quote", "parquet_garbage", "jsonl_utf16"):
        path, mention = world.bad_data[kind]
        out = world.out()
        cases.append(
            Case(
                "run",
                f"bad_data_after_tokenizer:{kind}",
                [
                    "--preset",
                    p["gemma"],
                    "--data",
                    path,
                    "--output-dir",
                    out,
                    "--tokenized-cache-dir",
                    "",
                    "--max-steps",
                    "1",
                ],
                (mention,),
                out,
            )
        )
    return cases


def test_bad_model_files_and_mismatched_adapters_fail_cleanly(isolated, monkeypatch):
    cases = model_cases(isolated)
    assert 20 <= len(cases) <= 40, len(cases)
    failures, elapsed = _run_cases(isolated, cases, monkeypatch)
    print(f"model cases: {len(cases)} invocations in {elapsed:.1f} s", file=sys.stderr)
    assert not failures, _report("model-loading", cases, failures, elapsed)


# ------------------------------------ focused regressions the fuzzer found


def _data_stats(*args):
    """`keras-ft data stats ARGS`, in-process."""
    from keras_ft.cli.data import main

    return CliRunner().invoke(main, ["stats", *map(str, args)])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--show", "-1"], "argument --show: must be non-negative. Received: --show -1"),
        (["--data-weight", "1"], "No such option '--data-weight'"),
        (["--plot", "stats.pdf"], "argument --plot: must name a .png file"),
    ],
)
def test_data_stats_refuses_bad_flags(tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    data = _write(tmp_path / "d.jsonl", _jsonl(GOOD_RECORDS))
    result = _data_stats("--data", data, "--no-tokens", *extra)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]  # no plot written


def test_data_stats_refuses_a_directory_as_plot(tmp_path):
    data = _write(tmp_path / "d.jsonl", _jsonl(GOOD_RECORDS))
    plots = tmp_path / "plots.png"
    plots.mkdir()
    result = _data_stats("--data", data, "--no-tokens", "--plot", plots)
    assert isinstance(result.exception, SystemExit)
    assert f"{plots} is a directory" in result.stderr
    assert not list(tmp_path.glob("*.png.png")) and not list(plots.iterdir())


def test_data_stats_unwritable_plot_is_one_error_line(tmp_path):
    data = _write(tmp_path / "d.jsonl", _jsonl(GOOD_RECORDS))
    plot = data / "p.png"  # a file as the parent directory
    result = _data_stats("--data", data, "--no-tokens", "--plot", plot)
    assert result.exit_code in (1, 2)
    err = result.stderr
    assert "--plot" in err and str(data) in err and "Traceback" not in err


def test_the_harness_flags_each_kind_of_unclean_failure(isolated, monkeypatch):
    """The checks above can fail: a command that leaks a file, one that raises,
    one that exits 0, one whose message names nothing, one that dumps a repr."""

    @click.command("selftest")
    @click.argument("how")
    def command(how):
        if how == "leak":
            Path("leaked.txt").write_text("x")  # into the working directory
            raise click.UsageError("bad --size")
        if how == "input":
            (isolated.inputs / "data" / "good.jsonl").touch()
            with open(isolated.inputs / "data" / "good.jsonl", "a") as f:
                f.write("\n")
            raise click.UsageError("bad --size")
        if how == "raise":
            raise KeyError("lora_kernel_a")
        if how == "repr":
            raise click.ClickException("bad --size: ValueError('x')")
        if how == "vague":
            raise click.ClickException("something went wrong")
        if how == "ok":
            click.echo("fine")

    good = isolated.good_data.read_bytes()
    expected = {
        "leak": "files outside the output dir changed",
        "input": "files outside the output dir changed",
        "raise": "uncaught KeyError",
        "repr": "an exception repr",
        "vague": "the message names none of",
        "ok": "exit code 0",
    }
    cases = [Case(command, how, [how], ("--size",), isolated.out()) for how in expected]
    failures, _ = _run_cases(isolated, cases, monkeypatch)
    isolated.good_data.write_bytes(good)
    found = {key.split()[-1]: items[0][1] for key, items in failures.items()}
    assert sorted(found) == sorted(expected)
    for how, problem in expected.items():
        assert any(problem in p for p in found[how]), (how, found[how])
    assert not (isolated.cwd / "leaked.txt").exists()  # removed again for later cases
    ok = [Case(command, "clean", ["clean"], ("--size",), isolated.out())]

    @click.command("selftest")
    @click.argument("how")
    def clean(how):
        raise click.UsageError("bad --size 3")

    ok[0].command = clean
    assert _run_cases(isolated, ok, monkeypatch)[0] == {}
