"""JAX's persistent compile cache: a second identical training run compiles less.

The main job's configuration, shortened: the embedded Gemma 3 270M
(`embedded:gemma3_270m`), data/how_to_steps.jsonl, the instruction template,
batch 4, 256 tokens, a few optimizer steps, one sample prompt (so generation
compiles too, as in a real run). Three runs, each in a fresh process (nothing
is kept in memory between them):

1. cold: `compile_cache_dir` a new, empty directory (JAX compiles, then stores);
2. warm: the same directory again (JAX loads what run 1 stored);
3. off:  `compile_cache_dir=""` (JAX compiles everything, stores nothing).

Per run: the first training step's seconds (keras_ft's `Throughput.compile_s`,
summary.json: compilation plus one step), XLA compile seconds the process
spent in total (JAX's `/jax/core/compile/backend_compile_duration` events),
cache hits/misses and the seconds JAX says the hits saved, the time of
`pipeline.finetune` and of the whole process, and the final loss (a cached
executable is the same program: the losses must be equal).

    python benchmarks/bench_compile_cache.py            # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

EVENTS = {
    "/jax/core/compile/backend_compile_duration": "xla_compile_s",
    "/jax/compilation_cache/compile_time_saved_sec": "saved_s",
    "/jax/compilation_cache/cache_retrieval_time_sec": "retrieval_s",
}
COUNTS = {
    "/jax/compilation_cache/cache_hits": "hits",
    "/jax/compilation_cache/cache_misses": "misses",
}


def worker(cache_dir: str, out_dir: str, steps: int) -> dict:
    """One training run through `pipeline.finetune`, with JAX's compile events counted."""
    import jax

    totals = {name: 0.0 for name in (*EVENTS.values(), *COUNTS.values())}
    per_function: dict[str, float] = {}

    def on_duration(event, duration, **kwargs):
        if event in EVENTS:
            totals[EVENTS[event]] += duration
        if event == "/jax/core/compile/backend_compile_duration":
            name = str(kwargs.get("fun_name", "?"))
            per_function[name] = per_function.get(name, 0.0) + duration

    def on_event(event, **kwargs):
        if event in COUNTS:
            totals[COUNTS[event]] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)

    from keras_ft.config import Config
    from keras_ft.pipeline import finetune

    cfg = Config(
        preset="embedded:gemma3_270m",
        data=("data/how_to_steps.jsonl",),
        template="instruction",
        batch_size=4,
        sequence_length=common.SEQUENCE_LENGTH,
        max_steps=steps,
        sample_prompts=("How do I boil an egg?",),
        max_new_tokens=8,
        output_dir=out_dir,
        compile_cache_dir=cache_dir,
        tokenized_cache_dir="",
    )
    start = time.perf_counter()
    result = finetune(cfg)
    finetune_s = time.perf_counter() - start
    summary = json.loads((Path(out_dir) / "summary.json").read_text())
    slowest = sorted(per_function.items(), key=lambda kv: -kv[1])[:3]
    return {
        **totals,
        "slowest_compiles": [[name, round(s, 1)] for name, s in slowest],
        "first_step_s": summary["compile_s"],
        "finetune_s": finetune_s,
        "final_loss": float(result.history["loss"][-1]),
        "val_loss_after": summary["metrics_after"].get("loss"),
        "peak_rss_mb": common.peak_rss_mb(),
        "load_avg": os.getloadavg()[0],
    }


def lscpu() -> str:
    """lscpu's model name and flags (the issue asks for both with every figure)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "lscpu unavailable"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}; flags: {fields.get('Flags', '').strip()}"


def cache_size(path: Path) -> tuple[int, float]:
    files = [p for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return len(files), sum(p.stat().st_size for p in files) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    parser.add_argument(
        "--worker", nargs=2, metavar=("CACHE_DIR", "OUT_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.worker:
        return common.emit(worker(args.worker[0], args.worker[1], args.steps))
    command = "python benchmarks/bench_compile_cache.py " + " ".join(sys.argv[1:])
    print(f"machine: {common.machine()}", flush=True)
    os.environ.pop("KERAS_FT_COMPILE_CACHE", None)  # the off-switch would void runs 1-2
    tmp = Path(tempfile.mkdtemp(prefix="bench_compile_cache_"))
    cache = tmp / "jax_cache"
    runs = {}
    try:
        for name, cache_dir in (("cold", str(cache)), ("warm", str(cache)), ("off", "")):
            out = tmp / f"run_{name}"
            runs[name] = common.run_worker(
                [__file__, "--steps", str(args.steps), "--worker", cache_dir, str(out)]
            )
            runs[name]["cache_files"], runs[name]["cache_mb"] = cache_size(cache)
            r = runs[name]
            print(
                f"{name}: first step {r['first_step_s']:.1f} s, XLA compile "
                f"{r['xla_compile_s']:.1f} s, hits {r['hits']:.0f}, misses {r['misses']:.0f}, "
                f"finetune {r['finetune_s']:.1f} s, process {r['process_s']:.1f} s, "
                f"loss {r['final_loss']:.6f}, load avg {r['load_avg']:.1f}",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [
        [
            {"cold": "1: new cache dir", "warm": "2: same dir again", "off": "3: cache off"}[n],
            r["first_step_s"],
            r["xla_compile_s"],
            f"{r['hits']:.0f} / {r['misses']:.0f}",
            r["saved_s"],
            r["finetune_s"],
            r["process_s"],
            f"{r['cache_files']} files, {r['cache_mb']:.0f} MB",
            f"{r['final_loss']:.6f}",
            r["peak_rss_mb"],
            f"{r['load_avg']:.1f}",
        ]
        for n, r in runs.items()
    ]
    table = common.md_table(
        [
            "run",
            "first step s (summary.json compile_s)",
            "XLA compile s (process)",
            "cache hits / misses",
            "compile s saved (JAX)",
            "finetune s",
            "process s",
            "cache dir after",
            "final train loss",
            "peak RSS MB",
            "load avg (1 min)",
        ],
        rows,
    )
    cold, warm, off = runs["cold"], runs["warm"], runs["off"]
    body = (
        f"- lscpu: {lscpu()}\n\n{table}\n\n"
        f"- warm / cold: first step {warm['first_step_s'] / cold['first_step_s']:.2f}x, "
        f"XLA compile {warm['xla_compile_s'] / max(cold['xla_compile_s'], 1e-9):.2f}x, "
        f"finetune {warm['finetune_s'] / cold['finetune_s']:.2f}x; "
        f"off / cold finetune {off['finetune_s'] / cold['finetune_s']:.2f}x. "
        f"Losses equal across the three runs: "
        f"{cold['final_loss'] == warm['final_loss'] == off['final_loss']}.\n"
        f"- config: embedded:gemma3_270m, data/how_to_steps.jsonl, template instruction, "
        f"batch 4, sequence 256, max_steps {args.steps}, one sample prompt (8 new tokens) "
        "before and after, validation split 0.1 evaluated before and after; each run a "
        "fresh process. XLA compile s: the seconds in JAX's compile-or-load of the "
        "whole process (training step, evaluation forward per bucket, generation), "
        "cache loads included; JAX writes only compilations of >= 1 s "
        "(`jax_persistent_cache_min_compile_time_secs`).\n"
        "- slowest compilations (s, per run): "
        + "; ".join(
            f"{n}: " + ", ".join(f"{f} {s}" for f, s in r["slowest_compiles"])
            for n, r in runs.items()
        )
    )
    common.publish(
        "Compile cache: a second identical run (bench_compile_cache.py)",
        command,
        body,
        runs,
        append=not args.no_append,
    )


if __name__ == "__main__":
    main()
