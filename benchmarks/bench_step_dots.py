"""Which dots of keras_ft's bfloat16 train step reach XLA:CPU's fast bf16 path.

Builds keras_ft's trainer on the embedded Gemma 3 270M (`--dtype`, LoRA rank 4
on query/value), jits one LoRA train step (forward, backward, AdamW) on a
packed Dolly row of 256 tokens, and reads XLA's optimized HLO
(`jit(...).lower(...).compile().as_text()`): every dot with its operand and
result dtypes, the FLOPs it does, whether XLA ran it inside a library fusion
(YNNPACK's `__ynn_fusion`, XNNPACK, oneDNN) and whether its bf16 operands were
widened to float32 before it (XLA:CPU's fallback for dots it has no bf16
kernel for: a float32 dot, plus the converts). Then it times the step.

`--f32-accumulation` patches Keras' JAX einsum/matmul (in this process only)
to ask for float32 accumulation when both operands are bf16
(`preferred_element_type=float32`, then a cast back to bf16): the dot shape
bench_matmul.py measures at several times the bf16->bf16 rate.
`--head-nn` patches keras_ft's chunked loss (in this process only) so the
logits dot multiplies by a physically transposed head, `h @ E.T` computed as
`h @ barrier(transpose(E))` ([hidden, vocab], contracting its first
dimension): the layout XLA:CPU hands to YNNPACK's bf16 kernel. XLA_FLAGS
come from the environment (run it once per flag set).

    python benchmarks/bench_step_dots.py --dtype bfloat16
    python benchmarks/bench_step_dots.py --dtype bfloat16 --f32-accumulation
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\w+)\[([0-9,]*)\]\S* (\w[\w\-]*)\((.*)$")
COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{\s*$")


def patch_f32_accumulation() -> None:
    """Keras' JAX einsum/matmul: bf16 x bf16 accumulates and returns float32,
    cast back to bf16 (the layer's dtype is unchanged)."""
    import jax.numpy as jnp
    from keras.src.backend.jax import numpy as knp

    einsum, matmul = knp.einsum, knp.matmul

    def both_bf16(*xs):
        return all(getattr(x, "dtype", None) == jnp.bfloat16 for x in xs)

    def einsum_f32(subscripts, *operands, **kwargs):
        if len(operands) == 2 and both_bf16(*operands):
            out = jnp.einsum(subscripts, *operands, preferred_element_type=jnp.float32)
            return out.astype(jnp.bfloat16)
        return einsum(subscripts, *operands, **kwargs)

    def matmul_f32(x1, x2):
        if both_bf16(x1, x2):
            return jnp.matmul(x1, x2, preferred_element_type=jnp.float32).astype(jnp.bfloat16)
        return matmul(x1, x2)

    knp.einsum, knp.matmul = einsum_f32, matmul_f32


def patch_head_nn() -> None:
    """keras_ft.model.loss._rows with the logits dot on a materialised E.T."""
    import inspect

    from keras_ft.model import loss

    source = inspect.getsource(loss._rows)
    old = "jnp.dot(h, matrix.T, preferred_element_type=jnp.float32)"
    if old not in source:
        raise SystemExit("keras_ft.model.loss._rows changed; --head-nn needs updating")
    new = "jnp.dot(h, jax.lax.optimization_barrier(matrix.T), preferred_element_type=jnp.float32)"
    namespace = dict(vars(loss))
    exec(compile(source.replace(old, new), loss.__file__, "exec"), namespace)
    loss._rows = namespace["_rows"]


def parse_hlo(text: str) -> list[dict]:
    """Every dot of an optimized HLO module: dtypes, shapes, FLOPs, where it runs."""
    computations: dict[str, dict[str, tuple]] = {}
    lines_of: dict[str, list[str]] = collections.defaultdict(list)
    current = None
    for line in text.splitlines():
        m = COMPUTATION.match(line)
        if m and "=" not in line.split("{")[0]:
            current = m.group(1)
            computations[current] = {}
            continue
        if current is None:
            continue
        m = INSTR.match(line)
        if m:
            name, dtype, dims, opcode, rest = m.groups()
            shape = tuple(int(d) for d in dims.split(",") if d)
            computations[current][name] = (dtype, shape, opcode, rest)
            lines_of[current].append(name)
    # Which computation each fusion calls, and its kind.
    called: dict[str, tuple[str, str, list[str]]] = {}
    for comp, instrs in computations.items():
        for name, (dtype, shape, opcode, rest) in instrs.items():
            if opcode == "fusion":
                target = re.search(r"calls=%([\w.\-]+)", rest)
                kind = re.search(r'"kind":"(__[a-z_]+)"', rest)
                operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
                if target:
                    called[target.group(1)] = (
                        kind.group(1) if kind else re.search(r"kind=(\w+)", rest).group(1),
                        comp,
                        operands,
                    )
    dots = []
    for comp, instrs in computations.items():
        for name, (dtype, shape, opcode, rest) in instrs.items():
            if opcode not in ("dot", "convolution", "custom-call"):
                continue
            if opcode == "custom-call" and "onednn" not in rest.lower():
                continue
            operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])[:2]
            ops = [instrs.get(o) for o in operands]
            contracting = re.search(r"lhs_contracting_dims=\{([0-9,]*)\}", rest)
            k = 1
            if contracting and ops[0]:
                for d in contracting.group(1).split(","):
                    if d:
                        k *= ops[0][1][int(d)]
            rhs = re.search(r"rhs_contracting_dims=\{([0-9,]*)\}", rest)
            rank = len(ops[1][1]) if len(ops) > 1 and ops[1] else 0
            batch = re.search(r"rhs_batch_dims=\{([0-9,]*)\}", rest)
            layout = (
                f"rhs contracts dim {rhs.group(1)} of {rank}"
                + (f", batch {batch.group(1)}" if batch and batch.group(1) else "")
                if rhs
                else "?"
            )
            result = 1
            for d in shape:
                result *= d
            origin = []
            for o in ops:  # a convert feeding the dot, inside the fusion
                if o and o[2] == "convert":
                    src = re.findall(r"%([\w.\-]+)", o[3])[0]
                    origin.append(instrs.get(src, ("?",))[0] + "->" + o[0])
                else:
                    origin.append(o[0] if o else "?")
            kind, caller, fusion_operands = called.get(comp, ("top-level", None, []))
            widened = False
            if caller:  # operands converted to f32 in the caller, before the fusion
                for fo in fusion_operands:
                    f = computations[caller].get(fo)
                    if f and "convert" in fo and f[0] == "f32":
                        widened = True
            dots.append(
                {
                    "name": name,
                    "where": kind,
                    "operands": " x ".join(origin),
                    "shapes": " x ".join(str(list(o[1])) if o else "?" for o in ops),
                    "result": dtype,
                    "gflop": 2 * result * k / 1e9,
                    "widened_outside": widened,
                    "layout": layout,
                }
            )
    return dots


def build_step(dtype: str):
    """keras_ft's trainer and a jitted LoRA train step on one packed row."""
    import functools

    import jax

    from benchmarks.bench_train import tokenized_subset
    from keras_ft.config import Config
    from keras_ft.data.batches import BatchSequence
    from keras_ft.data.tokenizer import TextTokenizer
    from keras_ft.model.causal_lm import build_model
    from keras_ft.train.trainer import build_trainer

    preset = common.embedded_preset()
    cfg = Config(
        preset=preset,
        data=(str(common.DOLLY),),
        lora_rank=common.LORA_RANK,
        sequence_length=common.SEQUENCE_LENGTH,
        batch_size=1,
        dtype=dtype,
    )
    causal_lm = build_model(cfg)
    tokenizer = TextTokenizer.from_preset(preset)
    trainer = build_trainer(cfg, causal_lm.backbone, total_steps=1000)
    optimizer = trainer.optimizer
    optimizer.build(trainer.trainable_variables)
    examples = tokenized_subset(tokenizer, 24)
    data = BatchSequence(
        examples, 1, common.SEQUENCE_LENGTH, tokenizer.pad_id, 0, shuffle=False, packing=True
    )
    batch = max((data[i] for i in range(len(data))), key=lambda b: b["token_ids"].shape[1])

    @functools.partial(jax.jit, donate_argnums=(0, 2))
    def step(trainable, frozen, opt_vars, x):
        def loss_fn(t):
            stats, _ = trainer.stateless_call(t, frozen, x, training=True)
            return stats[:, 0].sum() / jax.numpy.maximum(stats[:, 1].sum(), 1.0)

        loss, grads = jax.value_and_grad(loss_fn)(trainable)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        return trainable, opt_vars, loss

    state = [
        [v.value for v in trainer.trainable_variables],
        [v.value for v in trainer.non_trainable_variables],
        [v.value for v in optimizer.variables],
    ]
    return step, state, batch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", default="bfloat16", help="keras_ft --dtype")
    parser.add_argument("--f32-accumulation", action="store_true", help="see the docstring")
    parser.add_argument("--head-nn", action="store_true", help="see the docstring")
    parser.add_argument("--steps", type=int, default=6, help="timed steps")
    parser.add_argument("--dump", help="write the optimized HLO here")
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    if args.f32_accumulation:
        patch_f32_accumulation()
    if args.head_nn:
        patch_head_nn()
    step, state, batch = build_step(args.dtype)
    start = time.perf_counter()
    compiled = step.lower(*state, batch).compile()
    compile_s = time.perf_counter() - start
    text = compiled.as_text()
    if args.dump:
        with open(args.dump, "w") as f:
            f.write(text)
    dots = parse_hlo(text)
    groups: dict[tuple, dict] = {}
    for d in dots:
        key = (d["where"], d["operands"], d["result"], d["widened_outside"], d["layout"])
        g = groups.setdefault(key, {"count": 0, "gflop": 0.0, "example": d["shapes"]})
        g["count"] += 1
        g["gflop"] += d["gflop"]
    total = sum(d["gflop"] for d in dots)
    times, losses = [], []
    for _ in range(args.steps + 1):
        t = time.perf_counter()
        state[0], state[2], loss = compiled(state[0], state[1], state[2], batch)
        losses.append(float(loss))
        times.append(time.perf_counter() - t)
    step_s = common.median(times[1:])
    rows = [
        [
            where,
            operands,
            result,
            "yes" if widened else "no",
            layout,
            g["count"],
            g["gflop"],
            f"{100 * g['gflop'] / total:.0f} %",
            g["example"],
        ]
        for (where, operands, result, widened, layout), g in sorted(
            groups.items(), key=lambda kv: -kv[1]["gflop"]
        )
    ]
    table = common.md_table(
        [
            "runs in",
            "operand dtypes (as the dot sees them)",
            "result",
            "bf16 widened to f32 before the fusion",
            "layout",
            "dots",
            "GFLOP/step",
            "share",
            "e.g. shapes",
        ],
        rows,
    )
    tokens = int(batch["padding_mask"].sum())
    summary = (
        f"- dtype {args.dtype}, f32 accumulation patch: {args.f32_accumulation}, "
        f"head-NN patch: {args.head_nn}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; one packed row "
        f"{list(batch['token_ids'].shape)} ({tokens} real tokens); {len(dots)} dots, "
        f"{total:.1f} GFLOP per step in dots; compile {compile_s:.1f} s; step "
        f"{step_s:.2f} s (median of {args.steps}; {total / step_s:.0f} GFLOP/s in dots, "
        f"{tokens / step_s:.0f} tok/s); losses {losses[0]:.5f} -> {losses[-1]:.5f}. "
        "Static count: a dot inside a `lax.switch` branch (the chunked loss has one "
        "branch per row count) or a loop body is counted once, so GFLOP/step "
        "overstates the head (only one branch runs per chunk)."
    )
    body = summary + "\n\n" + table
    print(body)
    print(json.dumps({"step_s": step_s, "compile_s": compile_s, "losses": losses}))
    if not args.no_append:
        command = " ".join(["python", "benchmarks/bench_step_dots.py"] + sys.argv[1:])
        if os.environ.get("XLA_FLAGS"):
            command = f"XLA_FLAGS='{os.environ['XLA_FLAGS']}' " + command
        common.append_results("Dots of keras_ft's train step (bench_step_dots.py)", command, body)


if __name__ == "__main__":
    main()
