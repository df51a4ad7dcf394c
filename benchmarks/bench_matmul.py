"""XLA (JAX) matmul GFLOP/s on Gemma 3 270M shapes, float32 and bfloat16.

This is the "measured matmul peak" the training benchmark divides by. bf16
inputs accumulate in float32 (`preferred_element_type`), as training would.

    python benchmarks/bench_matmul.py
    python benchmarks/bench_matmul.py --flags-sweep   # XLA_FLAGS x dot variants

`--flags-sweep` runs each XLA:CPU flag set (`FLAG_SETS`) in its own process
(XLA reads XLA_FLAGS once), alternating the sets over `--rounds`, and times
the dot variants a bf16 training step contains (`VARIANTS`) on the step's
shapes; beside each figure it says what the optimized HLO made of the dot
(an XLA dot, a YNNPACK/XNNPACK/oneDNN fusion or custom call, and whether
the operands were converted to float32 first).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import append_results, md_table, median  # noqa: E402

# (name, m, k, n): m is tokens in a step (a 128-token bucket), k x n the weight.
SHAPES = [
    ("q proj 640x1024", 128, 640, 1024),
    ("mlp up 640x2048", 128, 640, 2048),
    ("mlp down 2048x640", 128, 2048, 640),
    ("mlp up, 256 rows", 256, 640, 2048),
    ("head 640x262144", 128, 640, 262144),
    ("head grad 262144x640", 128, 262144, 640),
]


# XLA:CPU flag sets of jaxlib 0.10.2 (names from `strings libjax_common.so |
# grep xla_cpu_`); each runs in a fresh process.
FLAG_SETS = {
    "default": "",
    "use_onednn": "--xla_cpu_use_onednn=true",
    "onednn_custom_call": (
        "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"
    ),
    "onednn_fusion=dot": "--xla_cpu_experimental_onednn_fusion_type=dot",
    "xnn_fusion=dot": "--xla_cpu_experimental_xnn_fusion_type=dot",
    "use_xnnpack": "--xla_cpu_use_xnnpack=true",
    "ynn_fusion=dot": "--xla_cpu_experimental_ynn_fusion_type=dot",
}

# What a bf16 step's dots look like: Keras' EinsumDense/Dense on bf16 inputs
# and kernels gives a bf16 result ("bf16->bf16"); "bf16->f32" asks for float32
# accumulation and output (preferred_element_type), "bf16->f32->bf16" casts
# that back to bf16 (what a layer could do to keep bf16 activations).
# "NT" variants keep the weight as [n, k] and contract its last dimension
# (`a @ b.T`): the layout of a tied head's logits (`h @ E.T`) and of every
# backward dot that multiplies by a transposed weight (dx = dy @ W.T).
VARIANTS = (
    "f32",
    "bf16->f32",
    "bf16->bf16",
    "bf16->f32->bf16",
    "f32 NT",
    "bf16->f32 NT",
    "bf16->bf16 NT",
)
SWEEP_SHAPES = [
    s for s in SHAPES if s[0] in ("q proj 640x1024", "mlp up, 256 rows", "mlp down 2048x640")
]


def dot_fn(variant: str):
    import jax.numpy as jnp

    if variant == "bf16->f32 NT":
        return lambda a, b: jnp.dot(a, b.T, preferred_element_type=jnp.float32)
    if variant.endswith(" NT"):
        return lambda a, b: a @ b.T
    if variant == "bf16->f32":
        return lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32)
    if variant == "bf16->f32->bf16":
        return lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32).astype(a.dtype)
    return lambda a, b: a @ b  # f32 x f32, or bf16 x bf16 -> bf16


def hlo_kind(text: str) -> str:
    """What XLA:CPU's optimized HLO made of a dot: library fusion/custom call or
    a plain dot, and whether operands were widened to float32 before it."""
    import re

    kinds = sorted(set(re.findall(r'"kind":"(__[a-z_]+)"', text)))
    kinds += sorted(set(re.findall(r'custom_call_target="([^"]+)"', text)))
    entry = text[text.find("ENTRY") :]
    # A bf16 operand widened before the dot: an entry-level convert (or a
    # loop fusion wrapping one) producing f32 from a parameter.
    widened = bool(
        re.search(
            r"%[\w.]*convert[\w.]* = f32\[[0-9,]+\]\{[0-9,]+\} (fusion|convert)\(%(a|b|param)",
            entry,
        )
    )
    parts = [",".join(kinds) or "XLA dot"]
    if widened:
        parts.append("operands converted to f32 first")
    return "; ".join(parts)


def sweep_worker(seconds: float) -> dict:
    """In this process (its XLA_FLAGS): GFLOP/s and HLO kind per shape x variant."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for name, m, k, n in SWEEP_SHAPES:
        for variant in VARIANTS:
            dtype = jnp.float32 if variant.startswith("f32") else jnp.bfloat16
            a = jnp.asarray(rng.standard_normal((m, k)), dtype)
            b_shape = (n, k) if variant.endswith(" NT") else (k, n)
            b = jnp.asarray(rng.standard_normal(b_shape), dtype)
            f = jax.jit(dot_fn(variant))
            kind = hlo_kind(f.lower(a, b).compile().as_text())
            f(a, b).block_until_ready()
            times, cpu = [], []
            deadline = time.perf_counter() + seconds
            while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 50):
                t, c = time.perf_counter(), time.process_time()
                f(a, b).block_until_ready()
                times.append(time.perf_counter() - t)
                cpu.append(time.process_time() - c)
            flops = 2 * m * k * n / 1e9
            out[f"{name}|{variant}"] = {
                "gflops": flops / median(times),
                "gflops_cpu": flops / max(median(cpu), 1e-9),
                "kind": kind,
            }
    return out


def flags_sweep(seconds: float, rounds: int, append: bool, only: str = "") -> None:
    import json
    import subprocess

    from benchmarks.common import machine

    sets = {k: v for k, v in FLAG_SETS.items() if not only or k in only.split(",")}
    results: dict[str, list[dict]] = {name: [] for name in sets}
    for _ in range(rounds):
        for name, flags in sets.items():
            env = dict(os.environ, XLA_FLAGS=flags, KERAS_BACKEND="jax")
            proc = subprocess.run(
                [sys.executable, __file__, "--sweep-worker", "--seconds", str(seconds)],
                capture_output=True,
                text=True,
                env=env,
                timeout=900,
            )
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                print(f"{name} FAILED: {proc.stderr[-2000:]}", flush=True)
                continue
            results[name].append(json.loads(line[-1][7:]))
            print(f"{name}: done, load avg {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for name, runs in results.items():
        if not runs:
            rows.append([name, FLAG_SETS[name] or "(none)", "FAILED", "", "", ""])
            continue
        for key in runs[0]:
            shape, variant = key.split("|")
            rows.append(
                [
                    name,
                    f"`{FLAG_SETS[name]}`" if FLAG_SETS[name] else "(none)",
                    shape,
                    variant,
                    median([r[key]["gflops"] for r in runs]),
                    median([r[key]["gflops_cpu"] for r in runs]),
                    runs[0][key]["kind"],
                ]
            )
    table = md_table(
        ["flag set", "XLA_FLAGS", "shape", "dot", "GFLOP/s", "GFLOP/CPU-s", "optimized HLO"],
        rows,
    )
    print(table)
    print(json.dumps(results))
    if append:
        command = " ".join(["python", "benchmarks/bench_matmul.py"] + sys.argv[1:])
        note = (
            f"- {machine()}\n- each flag set in a fresh process, {rounds} alternating "
            f"rounds, medians; {seconds} s per figure.\n"
        )
        append_results(
            "XLA:CPU flags x bf16 dot variants (bench_matmul.py --flags-sweep)",
            command,
            note + "\n" + table,
        )


def time_matmul(m: int, k: int, n: int, dtype: str, seconds: float = 1.0) -> tuple[float, float]:
    """(GFLOP/s, GFLOP per process-CPU-second) of a jitted [m,k]x[k,n] matmul
    (float32 accumulation); medians over repeated calls."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((m, k)), dtype)
    b = jnp.asarray(rng.standard_normal((k, n)), dtype)
    f = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
    f(a, b).block_until_ready()
    times, cpu = [], []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 50):
        t, c = time.perf_counter(), time.process_time()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    flops = 2 * m * k * n / 1e9
    return flops / median(times), flops / max(median(cpu), 1e-9)


def measure_peak(seconds: float = 1.0, rounds: int = 2) -> dict:
    """GFLOP/s per (shape, dtype), alternating dtypes over `rounds`; plus peaks.

    Returns:
        {"rows": [[shape, f32, bf16, ratio]], "f32": best f32, "bf16": best bf16,
         "peak": best of both}.
    """
    results, cpu = {}, {}
    for _ in range(rounds):
        for name, m, k, n in SHAPES:
            for dtype in ("float32", "bfloat16"):
                wall_rate, cpu_rate = time_matmul(m, k, n, dtype, seconds)
                results.setdefault((name, dtype), []).append(wall_rate)
                cpu.setdefault((name, dtype), []).append(cpu_rate)
    rows, best = [], {"float32": 0.0, "bfloat16": 0.0}
    for name, *_ in SHAPES:
        f32, bf16 = (median(results[(name, d)]) for d in ("float32", "bfloat16"))
        best["float32"], best["bfloat16"] = max(best["float32"], f32), max(best["bfloat16"], bf16)
        rows.append(
            [
                name,
                f32,
                bf16,
                bf16 / f32,
                median(cpu[(name, "float32")]),
                median(cpu[(name, "bfloat16")]),
            ]
        )
    return {
        "rows": rows,
        "f32": best["float32"],
        "bf16": best["bfloat16"],
        "peak": max(best.values()),
        "cpu_peak": max(median(v) for v in cpu.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; median")
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--flags-sweep", action="store_true", help="XLA_FLAGS x dot variants")
    parser.add_argument("--flag-sets", default="", help="comma-separated FLAG_SETS names")
    parser.add_argument("--sweep-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sweep_worker:
        import json

        print("RESULT " + json.dumps(sweep_worker(args.seconds)), flush=True)
        return
    if args.flags_sweep:
        return flags_sweep(args.seconds, args.rounds, not args.no_append, args.flag_sets)
    peak = measure_peak(args.seconds, args.rounds)
    table = md_table(
        [
            "shape (m x k x n)",
            "f32 GFLOP/s",
            "bf16 GFLOP/s",
            "bf16/f32",
            "f32 GFLOP/CPU-s",
            "bf16 GFLOP/CPU-s",
        ],
        [[f"{r[0]} (m={m})"] + r[1:] for r, (_, m, _, _) in zip(peak["rows"], SHAPES)],
    )
    summary = (
        f"Measured XLA matmul peak: f32 {peak['f32']:.1f}, bf16 {peak['bf16']:.1f} "
        f"GFLOP/s (best shape, median of {args.rounds} alternating rounds); "
        f"{peak['cpu_peak']:.1f} GFLOP per process-CPU-second. GFLOP/CPU-s is "
        "robust to other processes sharing the cores; on a quiet machine GFLOP/s "
        "approaches it times the core count."
    )
    print(table + "\n\n" + summary)
    if not args.no_append:
        command = " ".join(["python", "benchmarks/bench_matmul.py"] + sys.argv[1:])
        append_results("Matmul peak (XLA via JAX)", command, table + "\n\n" + summary)


if __name__ == "__main__":
    main()
