"""XLA (JAX) matmul GFLOP/s on Gemma 3 270M shapes, float32 and bfloat16.

This is the "measured matmul peak" the training benchmark divides by. bf16
inputs accumulate in float32 (`preferred_element_type`), as training would.

    python benchmarks/bench_matmul.py
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
    args = parser.parse_args()
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
