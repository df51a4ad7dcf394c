"""QLoRA memory: LoRA training on a float32 vs an int8 vs an int4 frozen base.

The embedded Gemma 3 270M, LoRA rank 4 on query/value, batch 1, 256 tokens,
the real Dolly 1,000 file (Instruction/Response template), `keras_ft.train`
with its callbacks, on CPU. Each variant runs in its own process:

    python benchmarks/bench_qlora_memory.py             # ~10 min on 2 cores

Figures per variant (MB):
- weights: bytes of the backbone's base weights as stored (int4 is packed two
  per byte; scales included; the token embedding stays float32);
- RSS after load: resident memory once the model is built (and quantized),
  after a garbage collection;
- first-step peak: the peak RSS from just before `train` through its first
  step, which includes XLA's compilation of the step (Linux's high-water mark
  is reset via /proc/self/clear_refs);
- steady peak: the peak RSS over the remaining steps (mark reset after step
  1); all examples fall in the longest bucket, so nothing compiles there;
- process peak: `ru_maxrss` of the whole process, including loading the float
  weights from the preset before quantizing them.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

VARIANTS = {"float32": "", "int8": "int8", "int4": "int4"}


def worker(variant: str, steps: int) -> None:
    import keras
    import numpy as np

    from keras_ft.config import Config
    from keras_ft.data.batches import BatchSequence
    from keras_ft.data.tokenizer import TextTokenizer
    from keras_ft.model.causal_lm import build_model
    from keras_ft.train.loop import train
    from keras_ft.train.trainer import build_trainer

    preset = common.embedded_preset()
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = Config(
            preset=preset,
            quantize=VARIANTS[variant],
            max_steps=steps,
            sequence_length=common.SEQUENCE_LENGTH,
            output_dir=run_dir,
            lora_rank=common.LORA_RANK,
        )
        start = time.perf_counter()
        causal_lm = build_model(cfg)
        load_s = time.perf_counter() - start
        weights_mb = (
            sum(
                np.asarray(w.value).nbytes
                for w in causal_lm.backbone.weights
                if "lora_kernel" not in w.path
            )
            / 1e6
        )
        tokenizer = TextTokenizer(causal_lm.preprocessor.tokenizer)
        data = BatchSequence(
            long_examples(tokenizer, cfg.sequence_length, steps),
            1,
            cfg.sequence_length,
            tokenizer.pad_id,
            0,
            buckets=[cfg.sequence_length],
        )  # one shape: no compiles after step 1
        trainer = build_trainer(cfg, causal_lm.backbone, steps)
        gc.collect()
        after_load = common.rss_mb()
        peaks = {}

        def after_first_step(batch, logs):
            if not peaks:
                peaks["first_step"] = common.rss_mb("VmHWM")
                common.reset_peak_rss()

        common.reset_peak_rss()
        start = time.perf_counter()
        history = train(
            cfg,
            trainer,
            data,
            None,
            run_dir,
            callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=after_first_step)],
        )
        train_s = time.perf_counter() - start
        losses = history.history["loss"]
    common.emit(
        {
            "variant": variant,
            "weights_mb": weights_mb,
            "rss_after_load_mb": after_load,
            "first_step_peak_mb": peaks["first_step"],
            "steady_peak_mb": common.rss_mb("VmHWM"),
            "process_peak_mb": common.peak_rss_mb(),
            "load_s": load_s,
            "train_s": train_s,
            "steps": steps,
            "final_loss": float(losses[-1]),
            "chunked_loss": trainer.use_chunked_loss,
        }
    )


def long_examples(tokenizer, sequence_length: int, count: int) -> list:
    """The first `count` Dolly examples longer than 3/4 of `sequence_length`."""
    from keras_ft.data.batches import bucket_lengths
    from keras_ft.data.tokenizer import tokenize_example
    from keras_ft.templates import get_template

    shortest = bucket_lengths(sequence_length, 4)[-2]
    template = get_template("instruction")
    examples = []
    for example in common.dolly_examples():
        tokens = tokenize_example(example, template, tokenizer, sequence_length)
        if tokens is not None and len(tokens.token_ids) - 1 > shortest:
            examples.append(tokens)
        if len(examples) == count:
            return examples
    raise ValueError(f"Only {len(examples)} Dolly examples exceed {shortest} tokens.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--no-append", action="store_true", help="print, skip RESULTS.md")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps)
        return
    results = [
        common.run_worker([__file__, "--worker", v, "--steps", str(args.steps)]) for v in VARIANTS
    ]
    base = results[0]
    rows = [
        [
            r["variant"],
            r["weights_mb"],
            r["rss_after_load_mb"],
            r["first_step_peak_mb"],
            r["steady_peak_mb"],
            f"{r['steady_peak_mb'] / base['steady_peak_mb']:.2f}x",
            r["process_peak_mb"],
            r["load_s"],
            r["train_s"],
            r["final_loss"],
            "chunked" if r["chunked_loss"] else "full logits",
        ]
        for r in results
    ]
    table = common.md_table(
        [
            "base",
            "weights MB",
            "RSS after load MB",
            "first-step peak MB",
            "steady peak MB",
            "steady vs float32",
            "process peak MB",
            "load s",
            f"train s ({args.steps} steps)",
            "loss",
            "head",
        ],
        rows,
    )
    common.publish(
        "QLoRA memory: LoRA on a float32 / int8 / int4 Gemma 3 270M (CPU)",
        f"python benchmarks/bench_qlora_memory.py --steps {args.steps}",
        table + "\n\n" + NOTES,
        results,
        append=not args.no_append,
    )


NOTES = """\
LoRA rank 4 on query/value, batch 1, Dolly examples of 193-256 tokens (one
padded shape). "first-step peak" includes XLA compiling the step; "steady
peak" is the training steps after it; "process peak" also counts loading the float32 weights
from the preset, which are quantized after loading (Keras quantizes built
layers), so it cannot drop below the float model's size. `quantize` leaves
the token embedding (Gemma's tied output head, 63 % of this model's weights)
in float32, so the loss stays chunked ("head"); see
`keras_ft.model.quantize_backbone`."""


if __name__ == "__main__":
    main()
