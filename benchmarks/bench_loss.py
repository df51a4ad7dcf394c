"""The output head + cross-entropy alone: what each loss.py lever buys.

Gemma 3's tied 262,144 x 640 head, forward and gradient w.r.t. the hidden
states (the head frozen, as with LoRA on any layer but `token_embedding`; a
trained head recomputes the logits in the backward pass), on Dolly-like rows
(a bucket of n rows of which n_loss bear loss). Contenders, alternating
A B C D per round, medians:

- full logits: `[n, vocab]` logits + keras sparse cross-entropy (keras-hub's way);
- whole chunks: `token_loss_stats(..., row_step=chunk_size)`, i.e. 128-row
  chunks computed whole once they hold any loss row (keras_ft before this change);
- row switch: keras_ft now (`row_step` 16: only loss rows, rounded up to 16);
- row switch, bf16: the same with bfloat16 inputs, float32 accumulation.

    python benchmarks/bench_loss.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import append_results, md_table, median  # noqa: E402

VOCAB, DIM = 262144, 640
# (padded rows, loss rows): the Dolly median example, a short and a long one.
CASES = [(64, 45), (128, 71), (256, 180)]


def contenders():
    import jax
    import jax.numpy as jnp

    from keras_ft.model.loss import reference_token_loss_stats, token_loss_stats

    def mean(stats):
        return stats[:, 0].sum() / stats[:, 1].sum()

    def reference(h, matrix, lab, w):
        return mean(reference_token_loss_stats(h, lambda x: x @ matrix.T, lab, w))

    def chunks(row_step, dtype):
        return lambda h, matrix, lab, w: mean(
            token_loss_stats(h.astype(dtype), matrix, lab, w, None, 128, row_step)
        )

    fns = {
        "full logits": reference,
        "whole chunks": chunks(128, jnp.float32),
        "row switch": chunks(None, jnp.float32),
        "row switch, bf16": chunks(None, jnp.bfloat16),
    }
    return {k: jax.jit(jax.value_and_grad(f)) for k, f in fns.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    matrix = jnp.asarray(rng.standard_normal((VOCAB, DIM)) * 0.03, jnp.float32)
    fns = contenders()
    rows = []
    for n, n_loss in CASES:
        h = jnp.asarray(rng.standard_normal((1, n, DIM)), jnp.float32)
        lab = jnp.asarray(rng.integers(0, VOCAB, (1, n)), jnp.int32)
        w = jnp.zeros((1, n)).at[0, n - n_loss - 2 : n - 2].set(1.0)
        args_ = (h, matrix, lab, w)
        values, cpu, wall = {}, {}, {}
        for name, f in fns.items():
            values[name] = jax.block_until_ready(f(*args_))  # compile
        for _ in range(args.rounds):
            for name, f in fns.items():
                t, c = time.perf_counter(), time.process_time()
                jax.block_until_ready(f(*args_))
                wall.setdefault(name, []).append(time.perf_counter() - t)
                cpu.setdefault(name, []).append(time.process_time() - c)
        ref_loss, ref_grad = values["full logits"]
        for name in fns:
            loss, grad = values[name]
            rel = float(
                jnp.abs(grad.astype(jnp.float32) - ref_grad).max() / jnp.abs(ref_grad).max()
            )
            rows.append(
                [
                    f"{n} rows, {n_loss} loss",
                    name,
                    median(wall[name]),
                    median(cpu[name]),
                    median(cpu["full logits"]) / median(cpu[name]),
                    f"{abs(float(loss) - float(ref_loss)):.1e}",
                    f"{rel:.1e}",
                ]
            )
    table = md_table(
        [
            "case",
            "contender",
            "wall s",
            "CPU s",
            "speed-up (CPU) vs full",
            "|loss - full|",
            "max grad err / max grad",
        ],
        rows,
    )
    print(table)
    if not args.no_append:
        command = " ".join(["python", "benchmarks/bench_loss.py"] + sys.argv[1:])
        append_results(
            "Head + cross-entropy, forward and d/d hidden (Gemma 3 head)",
            command,
            table
            + "\n\n"
            + (
                f"- {args.rounds} alternating rounds, medians; CPU s is process "
                "CPU time (both threads), robust to other processes."
            ),
        )


if __name__ == "__main__":
    main()
