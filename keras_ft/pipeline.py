"""`finetune(cfg)`: the whole flow on one screen. Notebooks call this.

config -> mesh and memory plan -> data -> tokenizer/template -> model ->
evaluate base -> fit -> evaluate tuned -> sample before/after -> save adapter
and run directory.

On a mesh (`cfg.mesh`, `keras_ft.distribution.setup`) every process runs all
of it; only the writer (process 0) writes into the run directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras

from keras_ft.config import Config
from keras_ft.data.batches import BatchSequence
from keras_ft.data.token_cache import cache_tokenized
from keras_ft.data.tokenizer import TextTokenizer, format_marked
from keras_ft.distribution import kept_distribution, mesh, setup
from keras_ft.files import write_json
from keras_ft.generation.generate import generate, generate_records
from keras_ft.model.causal_lm import build_model
from keras_ft.model.lora import count_lora_parameters, save_adapter
from keras_ft.model.presets import resolve_preset
from keras_ft.native_logs import filtered_stderr
from keras_ft.templates import get_template
from keras_ft.train.callbacks import Throughput
from keras_ft.train.loop import checkpoint_data, steps_plan, train
from keras_ft.train.rundir import RunDir, check_writable_dir
from keras_ft.train.trainer import build_trainer, evaluate_tokens

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Result:
    """What a run produced; everything is also written under `run_dir`."""

    run_dir: Path
    metrics_before: dict
    metrics_after: dict
    samples: list[dict]  # {"prompt", "before", "after"}
    adapter_path: Path | None
    history: dict
    data_report: dict
    # The tuned model in memory (LoRA unmerged), to generate, evaluate or export
    # without loading it again from `adapter_path`.
    causal_lm: object = dataclasses.field(default=None, repr=False, compare=False)


def finetune(cfg: Config) -> Result:
    """Fine-tunes `cfg.preset` with LoRA on `cfg.data`; see `Config`.

    Each phase is logged as it starts (logger `keras_ft`; shown on stdout when
    logging is not configured, e.g. in a notebook), so no phase is silent.
    """
    ensure_log_output()
    mesh.initialize(cfg)  # multi-host: before any JAX work (and before the run dir)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.show_examples:  # writes nothing into the run directory
        if cfg.tokenized_cache_dir:
            check_writable_dir(cfg.tokenized_cache_dir, "tokenized_cache_dir")
        template, tokenizer = _tokenizer(cfg, resolve_preset(cfg.preset))
        train_tokens, _, report = _read_data(cfg, template, tokenizer)
        show_examples(train_tokens[: cfg.show_examples], tokenizer)
        return Result(Path(cfg.output_dir), {}, {}, [], None, {}, report)
    # Checked, locked, and its settings checked against its checkpoint before
    # any data is read; config.json is written once the run is accepted
    # (`checkpoint.resume_or_start`), so a refused rerun changes nothing there.
    with kept_distribution(), RunDir.open(cfg) as run:  # the run's mesh ends with it
        return _finetune(cfg, run)


def _tokenizer(cfg: Config, preset_dir: str):
    template = get_template(cfg.template)
    log.info("Loading the tokenizer of %s...", cfg.preset)
    with filtered_stderr():  # SentencePiece's INFO line on stderr
        tokenizer = TextTokenizer.from_preset(preset_dir)
    return template, tokenizer


def _read_data(cfg: Config, template, tokenizer):
    log.info("Reading and tokenizing the data (%s)...", ", ".join(cfg.data))
    return cache_tokenized(cfg, template, tokenizer)


def _finetune(cfg: Config, run: RunDir) -> Result:
    run_dir = run.path
    preset_dir = resolve_preset(cfg.preset)  # once per run (it may probe the network)
    # The mesh and the memory plan, logged; refused here when it does not fit.
    placement = setup(cfg, preset_dir)
    shard = placement.shard if placement.distribution is not None else None
    template, tokenizer = _tokenizer(cfg, preset_dir)
    train_tokens, val_tokens, report = _read_data(cfg, template, tokenizer)
    train_data = BatchSequence(
        train_tokens,
        cfg.batch_size,
        cfg.sequence_length,
        tokenizer.pad_id,
        cfg.seed,
        cfg.shuffle,
        packing=cfg.packing,
        shard=shard,
    )
    # The data as `train` records it in checkpoints: refused here, before the model loads.
    run.check_resume_data(cfg, checkpoint_data(train_data, report.get("fingerprint")))

    log.info("Loading the model %s (dtype %s)...", cfg.preset, cfg.dtype)
    causal_lm = build_model(cfg, preset_dir, tokenizer.keras_tokenizer)  # tokenizer loaded once
    log.info("LoRA: %d trainable parameters", count_lora_parameters(causal_lm.backbone))
    val_data = (
        BatchSequence(
            val_tokens,
            cfg.batch_size,
            cfg.sequence_length,
            tokenizer.pad_id,
            cfg.seed,
            shuffle=False,
            shard=shard,
        )
        if val_tokens
        else None
    )
    epochs, total_steps = steps_plan(cfg, len(train_data))
    trainer = build_trainer(cfg, causal_lm.backbone, total_steps)

    metrics_before = _evaluate(trainer, val_data, val_tokens, "base")
    samples_before = _samples(causal_lm, cfg, tokenizer, "base")
    log.info(
        "Training: %d optimizer steps of batch %d%s (%d epoch%s of %d training examples)...",
        total_steps,
        cfg.batch_size,
        f" x {cfg.gradient_accumulation_steps} accumulated"
        if cfg.gradient_accumulation_steps > 1
        else "",
        epochs,
        "" if epochs == 1 else "s",
        len(train_tokens),
    )
    throughput = Throughput(train_data)
    history = train(
        cfg,
        trainer,
        train_data,
        val_data,
        run_dir,
        callbacks=[throughput],
        sample_fn=lambda: generate(causal_lm, list(cfg.sample_prompts), cfg, tokenizer),
        data_fingerprint=report["fingerprint"],
    )
    metrics_after = _evaluate(trainer, val_data, val_tokens, "tuned")
    samples_after = _samples(causal_lm, cfg, tokenizer, "tuned")

    samples = [
        {
            "prompt": p,
            "before": b["text"],
            "after": a["text"],
            "before_stopped": b["stopped"],
            "after_stopped": a["stopped"],
            "before_repeated_line": b["repeated_line"],
            "after_repeated_line": a["repeated_line"],
        }
        for p, b, a in zip(cfg.sample_prompts, samples_before, samples_after)
    ]
    summary = {
        "metrics_before": metrics_before,
        "metrics_after": metrics_after,
        "data": report,
        "tokens_per_s": throughput.tokens_per_s,
        "compile_s": throughput.compile_s,
    }
    adapter_path = None
    if mesh.is_writer():  # the other processes of a multi-host run write nothing
        log.info("Saving the adapter and the run's outputs to %s...", run_dir)
        adapter_path = save_adapter(causal_lm, run_dir, cfg)
        write_json(run_dir / "samples.json", samples)
        write_json(run_dir / "summary.json", summary)
    log_summary(metrics_before, metrics_after, samples)
    return Result(
        run_dir,
        metrics_before,
        metrics_after,
        samples,
        adapter_path,
        dict(history.history),
        report,
        causal_lm,
    )


def ensure_log_output() -> None:
    """Shows keras_ft's INFO lines on stdout when nothing configured logging.

    A notebook (or a script) that never calls `logging.basicConfig` would
    otherwise drop them, progress included. Configured logging is left alone.
    """
    package = logging.getLogger("keras_ft")
    if logging.getLogger().handlers or package.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)


def _evaluate(trainer, val_data, val_tokens, which: str) -> dict:
    if not val_data:
        return {}
    log.info("Evaluating the %s model on %d validation examples...", which, len(val_tokens))
    return evaluate_tokens(trainer, val_data)


def _samples(causal_lm, cfg: Config, tokenizer, which: str) -> list[dict]:
    prompts = list(cfg.sample_prompts)
    log.info(
        "Generating %d sample%s from the %s model (up to %d new tokens)...",
        len(prompts),
        "" if len(prompts) == 1 else "s",
        which,
        cfg.max_new_tokens,
    )
    return generate_records(causal_lm, prompts, cfg, tokenizer)


def show_examples(tokenized, tokenizer) -> None:
    """Prints rendered training examples; loss-bearing tokens are in [[ ]]."""
    for i, example in enumerate(tokenized):
        print(
            f"--- example {i}: {len(example.token_ids)} tokens, "
            f"{int(example.loss_mask.sum())} bear loss ---"
        )
        print(format_marked(example, tokenizer))


def log_summary(before: dict, after: dict, samples: list[dict]) -> None:
    if before:
        log.info(
            "validation loss: base %.4f -> tuned %.4f (perplexity %.2f -> %.2f)",
            before["loss"],
            after["loss"],
            before["perplexity"],
            after["perplexity"],
        )
    for sample in samples:
        log.info(
            "PROMPT: %s\n  BASE : %s\n  TUNED: %s",
            sample["prompt"],
            sample["before"],
            sample["after"],
        )
    if samples:
        n = len(samples)
        ended = [sum(s[f"{w}_stopped"] for s in samples) for w in ("before", "after")]
        looped = [sum(bool(s[f"{w}_repeated_line"]) for s in samples) for w in ("before", "after")]
        log.info(
            "replies that ended by themselves: base %d/%d -> tuned %d/%d; "
            "repeating one of their lines: base %d/%d -> tuned %d/%d",
            ended[0],
            n,
            ended[1],
            n,
            looped[0],
            n,
            looped[1],
            n,
        )
