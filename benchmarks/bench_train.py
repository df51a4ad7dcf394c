"""LoRA training speed: keras-hub plain recipe vs HF transformers+PEFT vs keras_ft.

Same model (the embedded Gemma 3 270M, f32), same data (the real Dolly 1,000
file, records with a context dropped, Instruction/Response template, 256
tokens), same LoRA (rank 4 on query/value, AdamW 5e-5, weight decay 0.01,
batch 1). Each contender runs in its own process, in the order A B C A B C;
figures are medians over the repeats, ratios are taken within a repeat.

    python benchmarks/bench_train.py            # ~15 min on 2 quiet Zen 3 cores

Per run: a warm-up (XLA compilation: the plain recipe's first step, keras_ft's
whole pass, so every bucket shape), then one timed pass over a fixed subset
(`--examples` records taken evenly across the file). "Useful" tokens are the real (non-padding) input positions.
Useful FLOPs count, per example of n tokens with n_loss loss-bearing tokens,
the frozen-base forward and activation backward (4 x n x matmul params),
causal attention (3 x its forward), and the tied head on loss tokens only
(4 x n_loss x vocab x hidden): the work a straightforward implementation
cannot avoid. The plain recipe and HF do more (padding, logits everywhere).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

CONTENDERS = {
    "plain": "keras-hub plain recipe (`fit` on strings, padded to 256)",
    "hf": "HF transformers + PEFT, torch f32, unpadded",
    "hf_bf16": "HF transformers + PEFT, torch bf16 weights + activations, LoRA + AdamW f32",
    "keras_ft": "keras_ft (CausalLMTrainer + BatchSequence, f32)",
    "keras_ft_packed": "keras_ft `--packing` (rows of several examples, f32)",
    "keras_ft_bf16": "keras_ft, `--dtype mixed_bfloat16`",
    "keras_ft_packed_bf16": "keras_ft `--packing --dtype bfloat16` (frozen base bf16, LoRA + AdamW f32)",
    "keras_ft_jit": "keras_ft model + optimizer in a bare jitted step (no `fit`)",
    "keras_ft_lean": "keras_ft, TensorFlow blocked (backbone only; not adopted)",
}
LEARNING_RATE, WEIGHT_DECAY = 5e-5, 0.01


def subset(examples: list, count: int) -> list:
    """`count` examples spread evenly over the file (a fixed, stated subset)."""
    stride = max(len(examples) // count, 1)
    return [examples[i * stride] for i in range(count)]


def tokenized_subset(tokenizer, count: int, heldout: bool = False):
    """`count` tokenized Dolly examples spread over the file; `heldout`: the
    examples half a stride after them (a validation set none of them is in)."""
    from keras_ft.data.tokenizer import tokenize_example
    from keras_ft.templates import get_template

    template = get_template("instruction")
    tokens = [
        tokenize_example(e, template, tokenizer, common.SEQUENCE_LENGTH)
        for e in common.dolly_examples()
    ]
    tokens = [t for t in tokens if t is not None]
    if heldout:
        stride = max(len(tokens) // count, 1)
        tokens = tokens[stride // 2 :]
    return subset(tokens, count)


def tensorflow_loaded() -> bool:
    """Whether this worker process imported TensorFlow (keras_ft should not)."""
    return "tensorflow" in sys.modules


class StepTimer:
    """Wall and process-CPU seconds per step; syncs on the step's outputs."""

    def __init__(self):
        self.wall, self.cpu, self.losses = [], [], []

    def begin(self):
        self._t, self._c = time.perf_counter(), time.process_time()

    def end(self, loss):
        loss = float(loss)  # blocks until the step has finished
        self.wall.append(time.perf_counter() - self._t)
        self.cpu.append(time.process_time() - self._c)
        self.losses.append(loss)


def keras_timer(timer: StepTimer):
    import keras

    class Callback(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            timer.begin()

        def on_train_batch_end(self, batch, logs=None):
            timer.end(logs["loss"])

    return Callback()


def worker_plain(preset: str, count: int) -> dict:
    """The seed recipe: keras-hub's LoRA guide, strings in, padded to 256."""
    import keras
    import keras_hub
    import numpy as np

    start = time.perf_counter()
    causal_lm = keras_hub.models.CausalLM.from_preset(preset)
    causal_lm.preprocessor.sequence_length = common.SEQUENCE_LENGTH
    causal_lm.backbone.enable_lora(rank=common.LORA_RANK)
    optimizer = keras.optimizers.AdamW(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    optimizer.exclude_from_weight_decay(var_names=["bias", "scale"])
    causal_lm.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        optimizer=optimizer,
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    load_s = time.perf_counter() - start
    pairs = [common.prompt_response(e) for e in subset(common.dolly_examples(), count)]
    data = {"prompts": [p for p, _ in pairs], "responses": [r for _, r in pairs]}
    x, _, weights = causal_lm.preprocessor(data)
    tokens = np.asarray(x["padding_mask"]).sum(axis=1).tolist()
    loss_tokens = np.asarray(weights).sum(axis=1).tolist()
    warm, timed = StepTimer(), StepTimer()
    first = {k: v[:1] for k, v in data.items()}
    causal_lm.fit(
        first, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[keras_timer(warm)]
    )
    causal_lm.fit(
        data, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[keras_timer(timed)]
    )
    # Keras' mean is over all 256 positions; rescale to loss-token mean.
    first_loss = warm.losses[0] * common.SEQUENCE_LENGTH / loss_tokens[0]
    return result(load_s, warm, timed, tokens, loss_tokens, first_loss, warm_steps_matching=[0])


def worker_keras_ft(
    preset: str, count: int, dtype: str = "float32", lean: bool = False, packing: bool = False
) -> dict:
    """keras_ft as `pipeline.finetune` uses it: build_model, BatchSequence, fit.

    `lean`: the backbone and tokenizer loaded by `common.lean_backbone` and
    `common.spm_tokenizer` (TensorFlow blocked), the rest unchanged.
    `packing`: several examples per row (`--packing`), one compiled shape per
    row bucket.
    """
    import numpy as np

    from keras_ft.config import Config
    from keras_ft.data.batches import BatchSequence
    from keras_ft.data.tokenizer import TextTokenizer
    from keras_ft.model.causal_lm import build_model
    from keras_ft.model.lora import enable_lora
    from keras_ft.train.trainer import build_trainer

    start = time.perf_counter()
    cfg = Config(
        preset=preset,
        data=(str(common.DOLLY),),
        lora_rank=common.LORA_RANK,
        sequence_length=common.SEQUENCE_LENGTH,
        batch_size=1,
        dtype=dtype,
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
    )
    if lean:
        backbone = common.lean_backbone(preset)
        enable_lora(backbone, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
        tokenizer = common.spm_tokenizer(preset)
    else:
        backbone = build_model(cfg).backbone
        tokenizer = TextTokenizer.from_preset(preset)
    trainer = build_trainer(cfg, backbone, total_steps=1000)
    load_s = time.perf_counter() - start
    examples = tokenized_subset(tokenizer, count)
    data = BatchSequence(
        examples, 1, common.SEQUENCE_LENGTH, tokenizer.pad_id, 0, shuffle=False, packing=packing
    )
    # Warm-up: the timed pass itself, once (XLA compiles each bucket shape).
    # shuffle=False: Keras would otherwise permute the batches at random.
    warm, timed = StepTimer(), StepTimer()
    trainer.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[keras_timer(warm)])
    trainer.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[keras_timer(timed)])
    tokens = [len(e.token_ids) - 1 for e in examples]
    loss_tokens = [int(np.sum(e.loss_mask)) for e in examples]
    # A packed first step holds several examples: its loss is not example 0's.
    first_loss = float("nan") if packing else warm.losses[0]
    out = result(load_s, warm, timed, tokens, loss_tokens, first_loss, list(range(len(data))))
    # The quality cost of a dtype: held-out loss after the same steps (the two
    # passes above), measured after the timings so it cannot change them.
    from keras_ft.train.trainer import evaluate_tokens

    val = BatchSequence(
        tokenized_subset(tokenizer, count, heldout=True),
        1,
        common.SEQUENCE_LENGTH,
        tokenizer.pad_id,
        0,
        shuffle=False,
    )
    out["val_loss"] = evaluate_tokens(trainer, val)["loss"]
    out["steps_trained"] = len(warm.wall) + len(timed.wall)
    return out


def load_hf(gguf: str, dtype: str = "float32"):
    """The GGUF dequantized by transformers, cached as a torch state dict after the
    first load (transformers' GGUF reader takes minutes on 2 cores, and refuses
    `save_pretrained` for GGUF-loaded models). A cached load builds the model
    and copies the mapped tensors in: its peak RSS holds both for a moment."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cached = common.PRESET_CACHE / "hf_gemma3_270m_from_gguf"
    if (cached / "model.pt").exists():
        model = AutoModelForCausalLM.from_config(
            AutoConfig.from_pretrained(cached), dtype=torch.float32
        )
        state = torch.load(cached / "model.pt", mmap=True, weights_only=True)
        model.load_state_dict(state)
        del state
        return model.to(getattr(torch, dtype))
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf), gguf_file=os.path.basename(gguf), dtype=torch.float32
    )
    cached.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(cached / "config.json")
    tmp = cached / f"model.pt.tmp{os.getpid()}"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, cached / "model.pt")
    return model.to(getattr(torch, dtype))


def worker_keras_ft_jit(preset: str, count: int) -> dict:
    """The same trainer and optimizer stepped by one jitted function, not `fit`:
    what Keras' loop costs (state copies, callbacks, metrics, data adapter)."""
    import functools

    import jax
    import numpy as np

    from keras_ft.config import Config
    from keras_ft.data.batches import BatchSequence
    from keras_ft.data.tokenizer import TextTokenizer
    from keras_ft.model.causal_lm import build_model
    from keras_ft.train.trainer import build_trainer

    start = time.perf_counter()
    cfg = Config(
        preset=preset,
        data=(str(common.DOLLY),),
        lora_rank=common.LORA_RANK,
        sequence_length=common.SEQUENCE_LENGTH,
        batch_size=1,
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
    )
    causal_lm = build_model(cfg)
    tokenizer = TextTokenizer.from_preset(preset)
    trainer = build_trainer(cfg, causal_lm.backbone, total_steps=1000)
    optimizer = trainer.optimizer
    optimizer.build(trainer.trainable_variables)
    load_s = time.perf_counter() - start
    examples = tokenized_subset(tokenizer, count)
    data = BatchSequence(examples, 1, common.SEQUENCE_LENGTH, tokenizer.pad_id, 0, shuffle=False)

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
    shapes, warm_index = [], []
    for i in range(len(examples)):
        if data[i]["token_ids"].shape not in shapes:
            shapes.append(data[i]["token_ids"].shape)
            warm_index.append(i)
    warm, timed = StepTimer(), StepTimer()
    for indices, timer in ((warm_index, warm), (range(len(examples)), timed)):
        for i in indices:
            timer.begin()
            state[0], state[2], loss = step(state[0], state[1], state[2], data[i])
            timer.end(loss)
    tokens = [len(e.token_ids) - 1 for e in examples]
    loss_tokens = [int(np.sum(e.loss_mask)) for e in examples]
    return result(load_s, warm, timed, tokens, loss_tokens, warm.losses[0], warm_index)


def worker_hf(gguf: str, preset: str, count: int, dtype: str = "float32") -> dict:
    """HF transformers + PEFT on the same GGUF weights and the same token ids.

    `dtype="bfloat16"`: the base model cast to bf16 (`model.to`; weights and
    activations bf16, torch's bf16 matmuls reach oneDNN/AMX), the LoRA weights
    float32 (PEFT's `autocast_adapter_dtype`, its default: it casts the
    adapter's input to float32), so AdamW's state is float32 too: the same
    split as keras_ft's `--dtype bfloat16`.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from keras_ft.data.tokenizer import TextTokenizer

    torch.manual_seed(0)
    start = time.perf_counter()
    lora = LoraConfig(
        r=common.LORA_RANK,
        lora_alpha=common.LORA_RANK,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "v_proj"],
    )
    model = get_peft_model(load_hf(gguf, dtype), lora, autocast_adapter_dtype=True)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    lora_dtypes = sorted({str(p.dtype) for p in params})
    base_dtypes = sorted({str(p.dtype) for p in model.parameters() if not p.requires_grad})
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    load_s = time.perf_counter() - start
    examples = tokenized_subset(TextTokenizer.from_preset(preset), count)

    def step(example, timer):
        ids = torch.tensor(example.token_ids[None].astype("int64"))
        labels = ids.clone()
        labels[0, ~torch.tensor(example.loss_mask)] = -100
        timer.begin()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timer.end(loss.item())

    warm, timed = StepTimer(), StepTimer()
    for example in examples[:2]:
        step(example, warm)
    for example in examples:
        step(example, timed)
    tokens = [len(e.token_ids) - 1 for e in examples]
    loss_tokens = [int(e.loss_mask.sum()) for e in examples]
    out = result(load_s, warm, timed, tokens, loss_tokens, warm.losses[0], [0, 1])
    out["dtypes"] = f"base {'/'.join(base_dtypes)}, LoRA {'/'.join(lora_dtypes)}"
    return out


def worker_logits(gguf: str, preset: str, count: int) -> dict:
    """Max |logit difference| and top-1 agreement, keras-hub vs HF, same weights."""
    import keras_hub
    import numpy as np
    import torch

    from keras_ft.data.tokenizer import TextTokenizer

    backbone = keras_hub.models.Backbone.from_preset(preset)
    model = load_hf(gguf).eval()
    max_diff, agree, total, scale = 0.0, 0, 0, 0.0
    for example in tokenized_subset(TextTokenizer.from_preset(preset), count)[:3]:
        ids = example.token_ids[None, :-1]
        hidden = backbone({"token_ids": ids, "padding_mask": np.ones_like(ids, bool)})
        ours = np.asarray(backbone.token_embedding(hidden, reverse=True))
        with torch.no_grad():
            theirs = model(input_ids=torch.tensor(ids.astype("int64"))).logits.numpy()
        max_diff = max(max_diff, float(np.abs(ours - theirs).max()))
        scale = max(scale, float(np.abs(ours).max()))
        agree += int((ours.argmax(-1) == theirs.argmax(-1)).sum())
        total += ids.shape[1]
    return {
        "max_abs_diff": max_diff,
        "max_abs_logit": scale,
        "top1_agreement": agree / total,
        "positions": total,
        "peak_rss_mb": common.peak_rss_mb(),
    }


def result(load_s, warm, timed, tokens, loss_tokens, first_loss, warm_steps_matching):
    # Compilation = what the warm-up steps took beyond the same steps at steady state.
    compile_s = sum(w - timed.wall[i] for w, i in zip(warm.wall, warm_steps_matching))
    return {
        "load_s": load_s,
        "compile_s": compile_s,
        "warm_wall": warm.wall,
        "step_wall": timed.wall,
        "step_cpu": timed.cpu,
        "tokens": tokens,
        "loss_tokens": loss_tokens,
        "first_loss": first_loss,
        "peak_rss_mb": common.peak_rss_mb(),
        "load_avg": os.getloadavg()[0],
        "tensorflow_loaded": tensorflow_loaded(),
    }


def rate(run: dict, key: str) -> float:
    """Useful tokens per (wall or CPU) second of one run."""
    return sum(run["tokens"]) / sum(run[key])


def useful_flops(config: dict, tokens: list, loss_tokens: list) -> float:
    """Model FLOPs a straightforward LoRA step cannot avoid (see the docstring)."""
    d, layers = config["hidden_dim"], config["num_layers"]
    q = config["num_query_heads"] * config["head_dim"]
    kv = config["num_key_value_heads"] * config["head_dim"]
    matmul_params = layers * (d * (q + 2 * kv) + q * d + 3 * d * config["intermediate_dim"])
    total = 0.0
    for n, n_loss in zip(tokens, loss_tokens):
        attention = layers * 2 * 2 * q * n * (n + 1) / 2  # QK^T and AV, causal
        total += 4 * n * matmul_params + 3 * attention + 4 * n_loss * config["vocabulary_size"] * d
    return total


def summarize(name: str, runs: list[dict], config: dict, peak_gflops: float) -> dict:
    med = common.median
    out = {"name": name}
    out["s_per_step"] = med([sum(r["step_wall"]) / len(r["step_wall"]) for r in runs])
    out["cpu_s_per_step"] = med([sum(r["step_cpu"]) / len(r["step_cpu"]) for r in runs])
    out["tok_s"] = med([sum(r["tokens"]) / sum(r["step_wall"]) for r in runs])
    out["tok_cpu_s"] = med([sum(r["tokens"]) / sum(r["step_cpu"]) for r in runs])
    out["gflops"] = med(
        [
            useful_flops(config, r["tokens"], r["loss_tokens"]) / 1e9 / sum(r["step_wall"])
            for r in runs
        ]
    )
    out["peak_frac"] = out["gflops"] / peak_gflops["wall"]
    out["cpu_frac"] = (
        med(
            [
                useful_flops(config, r["tokens"], r["loss_tokens"]) / 1e9 / sum(r["step_cpu"])
                for r in runs
            ]
        )
        / peak_gflops["cpu"]
    )
    for key in ("compile_s", "load_s", "peak_rss_mb", "first_loss", "load_avg"):
        out[key] = med([r[key] for r in runs])
    out["val_loss"] = med([r["val_loss"] for r in runs]) if "val_loss" in runs[0] else None
    out["tensorflow_loaded"] = any(r["tensorflow_loaded"] for r in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=24, help="timed examples per run")
    parser.add_argument("--repeats", type=int, default=2, help="A B C rounds")
    parser.add_argument(
        "--contenders",
        default="plain,hf,hf_bf16,keras_ft_packed,keras_ft_packed_bf16",
        help=f"comma-separated, from {sorted(CONTENDERS)}",
    )
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "keras_ft_lean":
        sys.modules["tensorflow"] = sys.modules["tensorflow_text"] = None  # never loaded
    if args.worker == "plain":
        # The plain recipe is keras-hub's own: its preprocessor runs on
        # TensorFlow, which keras_ft (imported below for the preset) hides.
        os.environ["KERAS_FT_IMPORT_TENSORFLOW"] = "1"
    preset = common.embedded_preset()
    if args.worker:
        return run_as_worker(args.worker, preset, args.examples)
    names = args.contenders.split(",")
    command = "python benchmarks/bench_train.py " + " ".join(sys.argv[1:])
    print(f"machine: {common.machine()}\npreset: {preset}", flush=True)
    from benchmarks.bench_matmul import measure_peak

    peak = measure_peak(seconds=0.5, rounds=1)
    print(f"matmul peak before: f32 {peak['f32']:.1f} bf16 {peak['bf16']:.1f} GFLOP/s", flush=True)
    runs = {n: [] for n in names}
    for repeat in range(args.repeats):
        for name in names:
            try:
                r = common.run_worker(
                    [__file__, "--worker", name, "--examples", str(args.examples)]
                )
            except RuntimeError as err:  # report the others; say which failed
                print(f"[{repeat}] {name} FAILED: {err}", flush=True)
                continue
            runs[name].append(r)
            print(
                f"[{repeat}] {name}: {sum(r['step_wall']) / len(r['step_wall']):.2f} s/step, "
                f"{sum(r['tokens']) / sum(r['step_wall']):.1f} tok/s, "
                f"compile {r['compile_s']:.1f} s, RSS {r['peak_rss_mb']:.0f} MB, "
                f"load avg {r['load_avg']:.1f}, TensorFlow imported: {r['tensorflow_loaded']}"
                + (f", val loss {r['val_loss']:.5f}" if "val_loss" in r else "")
                + (f", {r['dtypes']}" if "dtypes" in r else ""),
                flush=True,
            )
    # The logits check runs last so that it reuses the HF model cached by the
    # first HF run (transformers' GGUF reader takes minutes).
    check = None
    if "hf" in names:
        try:
            check = common.run_worker(
                [__file__, "--worker", "logits", "--examples", str(args.examples)]
            )
        except RuntimeError as err:
            print(f"logits check FAILED: {err}", flush=True)
        print("logits check:", json.dumps(check), flush=True)
    # A second peak measurement brackets drift; skipped for a single repeat.
    peak_after = measure_peak(seconds=0.5, rounds=1) if args.repeats > 1 else peak
    peak_f32 = max(peak["f32"], peak_after["f32"])
    peak_all = max(peak["peak"], peak_after["peak"])
    config = json.load(open(os.path.join(preset, "config.json")))["config"]
    names = [n for n in names if runs[n]]
    peaks = {"wall": peak_all, "cpu": max(peak["cpu_peak"], peak_after["cpu_peak"])}
    rows = [summarize(n, runs[n], config, peaks) for n in names]
    report(args, command, names, runs, rows, check, peak, peak_after, peak_f32, peak_all)


def report(args, command, names, runs, rows, check, peak, peak_after, peak_f32, peak_all):
    headers = [
        "contender",
        "s/step",
        "useful tok/s",
        "CPU-s/step",
        "useful tok/CPU-s",
        "compile s",
        "load s",
        "peak RSS MB",
        "useful GFLOP/s",
        "% of peak",
        "% of peak (CPU time)",
        "first-step loss",
        "TensorFlow imported",
        "val loss after",
    ]
    table = common.md_table(
        headers,
        [
            [
                CONTENDERS[r["name"]],
                r["s_per_step"],
                r["tok_s"],
                r["cpu_s_per_step"],
                r["tok_cpu_s"],
                r["compile_s"],
                r["load_s"],
                r["peak_rss_mb"],
                r["gflops"],
                f"{100 * r['peak_frac']:.0f} %",
                f"{100 * r['cpu_frac']:.0f} %",
                "n/a (packed)" if r["first_loss"] != r["first_loss"] else f"{r['first_loss']:.4f}",
                "yes" if r["tensorflow_loaded"] else "no",
                "" if r["val_loss"] is None else f"{r['val_loss']:.4f}",
            ]
            for r in rows
        ],
    )
    ratios = []
    for ours in [n for n in names if n.startswith("keras_ft")]:
        for ref in [n for n in ("plain", "hf", "hf_bf16") if n in names]:
            pairs = list(zip(runs[ours], runs[ref]))  # same repeat: A B pairs
            wall = [rate(k, "step_wall") / rate(o, "step_wall") for k, o in pairs]
            cpu = [rate(k, "step_cpu") / rate(o, "step_cpu") for k, o in pairs]
            rss = [k["peak_rss_mb"] / o["peak_rss_mb"] for k, o in pairs]
            ratios.append(
                [
                    f"{ours} / {ref}",
                    common.median(wall),
                    " ".join(f"{t:.2f}" for t in wall),
                    common.median(cpu),
                    common.median(rss),
                ]
            )
    ratio_table = (
        common.md_table(
            ["ratio", "useful tok/s (median)", "per repeat", "useful tok/CPU-s", "peak RSS"], ratios
        )
        if ratios
        else ""
    )
    lines = [
        table,
        "",
        ratio_table,
        "",
        f"- subset: {args.examples} examples evenly spaced over the 803 kept Dolly records "
        f"({sum(runs[names[0]][0]['tokens'])} real tokens), batch 1, "
        f"{args.repeats} alternating repeats, medians.",
        f"- matmul peak (XLA, best shape) before/after: f32 {peak['f32']:.1f}/"
        f"{peak_after['f32']:.1f}, bf16 {peak['bf16']:.1f}/{peak_after['bf16']:.1f} "
        f"GFLOP/s; '% of peak' divides by {peak_all:.1f}.",
        "- CPU-s columns use process CPU time (all threads): robust to other "
        "processes on the machine, unlike wall time. '% of peak (CPU time)' divides "
        "useful FLOPs per CPU-second by the matmul's FLOPs per CPU-second "
        f"({max(peak['cpu_peak'], peak_after['cpu_peak']):.1f}, best shape and dtype).",
    ]
    lines.append(f"- lscpu: {lscpu()}")
    by_name = {r["name"]: r for r in rows}
    for f32, bf16 in (("keras_ft_packed", "keras_ft_packed_bf16"), ("keras_ft", "keras_ft_bf16")):
        if f32 in by_name and bf16 in by_name and by_name[f32]["val_loss"] is not None:
            a, b = by_name[f32]["val_loss"], by_name[bf16]["val_loss"]
            steps = runs[f32][0]["steps_trained"]
            lines.append(
                f"- quality, {bf16} vs {f32}: held-out loss after the same {steps} steps "
                f"(warm-up pass + timed pass, same rows in the same order) {b:.4f} vs "
                f"{a:.4f}: {100 * (b - a) / a:+.2f} %. Held-out: {args.examples} Dolly "
                "examples half a stride after the training ones, token-level mean "
                "(`evaluate_tokens`), each in its own dtype."
            )
    for name in ("hf", "hf_bf16"):
        if name in names and "dtypes" in runs[name][0]:
            lines.append(f"- {name} parameters: {runs[name][0]['dtypes']}.")
    if check is None and "hf" in names:
        lines.append(
            "- same weights: the logits check FAILED (see the log); HF figures are unverified."
        )
    if check:
        lines.append(
            f"- same weights: keras-hub vs HF logits max |diff| "
            f"{check['max_abs_diff']:.2e} (max |logit| {check['max_abs_logit']:.1f}), "
            f"top-1 agreement {100 * check['top1_agreement']:.1f} % over "
            f"{check['positions']} positions."
        )
    lines.append(
        "- GPU: not measured; no GPU is lent to this task (the `device` tool "
        "reports none), so no MFU against a GPU bf16 peak."
    )
    body = "\n".join(lines)
    print(body)
    if not args.no_append:
        common.append_results("Training: LoRA rank 4 q/v, Gemma 3 270M, Dolly", command, body)


def lscpu() -> str:
    """lscpu's model name and flags."""
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unavailable"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}; flags: {fields.get('Flags', '').strip()}"


def run_as_worker(name: str, preset: str, count: int) -> None:
    if name == "plain":
        common.emit(worker_plain(preset, count))
    elif name == "keras_ft":
        common.emit(worker_keras_ft(preset, count))
    elif name == "keras_ft_packed":
        common.emit(worker_keras_ft(preset, count, packing=True))
    elif name == "keras_ft_bf16":
        common.emit(worker_keras_ft(preset, count, dtype="mixed_bfloat16"))
    elif name == "keras_ft_packed_bf16":
        common.emit(worker_keras_ft(preset, count, dtype="bfloat16", packing=True))
    elif name == "keras_ft_lean":
        common.emit(worker_keras_ft(preset, count, lean=True))
    elif name == "keras_ft_jit":
        common.emit(worker_keras_ft_jit(preset, count))
    elif name == "hf":
        common.emit(worker_hf(common.gguf_path(), preset, count))
    elif name == "hf_bf16":
        common.emit(worker_hf(common.gguf_path(), preset, count, dtype="bfloat16"))
    elif name == "logits":
        common.emit(worker_logits(common.gguf_path(), preset, count))
    else:
        raise SystemExit(f"unknown worker {name!r}")


if __name__ == "__main__":
    main()
