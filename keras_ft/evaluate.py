"""Did fine-tuning help? Base and tuned model scored on the same held-out data.

`evaluate_tokens` gives held-out loss, perplexity and token accuracy over
loss-bearing (response) tokens. `compare_base_and_tuned` loads a preset, scores
it as the adapter was trained on (quantized, for a QLoRA adapter), applies the
LoRA adapter and scores it again on the same examples:
token metrics, greedy generations against references (exact match, ROUGE-L;
see `metrics_text`), the task checks named in `checks` (`steps`, `label`,
`length`) and generation latency. `python -m keras_ft.evaluate` writes the
results as a Markdown and an HTML report (`keras_ft.report`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import click
import numpy as np

from keras_ft import cli_errors, metrics_text
from keras_ft.config import Config, load_config
from keras_ft.templates import Example, Template, get_template
from keras_ft.tokens import TextTokenizer, prompt_token_ids

log = logging.getLogger(__name__)
CHECKS = ("steps", "label", "length")
PROMPT_STEP = 32  # prompt lengths are padded up to this: fewer XLA compiles


def evaluate_tokens(trainer, dataset) -> dict[str, float]:
    """Exact token-level metrics of `trainer` on every batch of `dataset`.

    The loss is summed over all loss-bearing tokens and divided once, so it is
    not a mean of per-batch means. The forward pass is one jitted
    `stateless_call` (Keras' `predict_on_batch` costs seconds more per call),
    made once per trainer: periodic evaluations reuse its compiled shapes.

    Returns:
        {"loss", "perplexity", "accuracy", "num_tokens"}.
    """
    trainable = [v.value for v in trainer.trainable_variables]
    frozen = [v.value for v in trainer.non_trainable_variables]
    forward = _jitted_forward(trainer)
    stats = np.zeros(3)
    for index in range(len(dataset)):
        stats += np.asarray(forward(trainable, frozen, dataset[index])).sum(axis=0)
    loss = stats[0] / max(stats[1], 1.0)
    return {"loss": float(loss), "perplexity": float(math.exp(min(loss, 50.0))),
            "accuracy": float(stats[2] / max(stats[1], 1.0)),
            "num_tokens": int(stats[1])}


def _jitted_forward(trainer):
    # A new jax.jit(lambda) per call would compile every shape again (seconds
    # to minutes each on CPU). Variables are arguments, so one per trainer is
    # exact; it lives on the trainer (bypassing Keras' attribute tracking).
    forward = getattr(trainer, "_keras_ft_eval_forward", None)
    if forward is None:
        import jax

        forward = jax.jit(lambda t, f, x: trainer.stateless_call(t, f, x)[0])
        object.__setattr__(trainer, "_keras_ft_eval_forward", forward)
    return forward


# ------------------------------------------------------------- held-out data


@dataclasses.dataclass
class HeldOut:
    """The examples both models are scored on, and where they came from."""

    examples: list[Example]
    source: str  # "validation split of <run>" or the data spec
    num_overlap_removed: int = 0  # examples equal to a training example
    labels: list[str] = dataclasses.field(default_factory=list)  # label set
    label_source: str = ""


def load_heldout(cfg: Config, data: str | None = None, skip: int = 0,
                 limit: int = 0, run_cfg: Config | None = None) -> HeldOut:
    """The held-out examples: a data spec, or else the run's validation split.

    Args:
        cfg: data options (fields, drop_with_context, template...).
        data: a held-out file/spec; None takes `run_cfg`'s validation split,
            recomputed exactly as training split it (same seed and options).
        skip: skip this many usable examples of `data` first (e.g. the
            `num_examples` a run read from the same file).
        limit: keep at most this many examples (0 keeps all).
        run_cfg: the training run's config; its training examples are
            removed from the held-out set (counted) and the labels it read
            are the label set.
    """
    from keras_ft.data import example_hash, plan_split, stream_examples
    from keras_ft.records import LoadReport

    train_keys, report = np.zeros(0, np.uint64), None
    if run_cfg is not None:
        plan = plan_split(run_cfg)  # hashes only: the run's data may not fit in memory
        train_keys, report = plan.train_keys, plan.report
    if data:
        eval_report = LoadReport()
        stream = stream_examples(cfg, (data,), eval_report)
        examples = list(itertools.islice(stream, skip, skip + limit if limit else None))
        source = f"{data} (examples {skip + 1}-{skip + len(examples)})"
    elif run_cfg is not None:
        examples = validation_examples(run_cfg, plan, limit)
        source = f"validation split of {', '.join(run_cfg.data)} (seed {run_cfg.seed})"
    else:
        raise ValueError("No held-out data: pass --data, or an adapter inside a run "
                         "directory (its validation split is used).")
    in_train = np.isin(np.asarray([example_hash(e) for e in examples], np.uint64),
                       train_keys)
    kept = [e for e, seen in zip(examples, in_train) if not seen]
    if len(kept) < len(examples):
        log.warning("Removed %d held-out examples that are also training examples.",
                    len(examples) - len(kept))
    if not kept:
        raise ValueError(f"No held-out examples left in {source}.")
    # The label set is what the run read (both splits), else the held-out data's.
    labels = sorted(report.labels) if report else []
    label_source = "run's data"
    if not labels:
        labels = sorted({e.label for e in kept if e.label is not None})
        label_source = "held-out data" if labels else ""
    return HeldOut(kept, source, len(examples) - len(kept), labels, label_source)


def validation_examples(run_cfg: Config, plan, limit: int = 0) -> list[Example]:
    """The first `limit` (0 = all) validation examples of `plan`, read again."""
    from keras_ft.data import read_data, stream_examples
    from keras_ft.records import LoadReport

    wanted = plan.validation[:limit] if limit else plan.validation
    stream = (stream_examples(run_cfg, (run_cfg.validation_data,), LoadReport())
              if plan.validation_is_separate else read_data(run_cfg, LoadReport()))
    position = {int(index): rank for rank, index in enumerate(wanted)}
    picked: list = [None] * len(wanted)
    for index, example in enumerate(stream):
        if index in position:
            picked[position[index]] = example
    return picked


# --------------------------------------------------------------- generation


def encode_prompt(example: Example, template: Template, tokenizer: TextTokenizer,
                  max_tokens: int) -> tuple[list[int], bool]:
    """Token ids of the conversation before the last reply, ready to generate.

    Prompts longer than `max_tokens` keep the begin tokens and the end (the
    latest turns). Returns (ids, truncated).
    """
    ids = prompt_token_ids(example.messages[:-1], template, tokenizer)
    if len(ids) <= max_tokens:
        return ids, False
    head = len(template.begin)
    return ids[:head] + ids[len(ids) - (max_tokens - head):], True


def generate_replies(generate_fn, prompts: list[list[int]], template: Template,
                     tokenizer: TextTokenizer, max_new_tokens: int,
                     batch_size: int = 8) -> list[dict]:
    """Generates a reply per prompt with a compiled generation loop.

    `generate_fn` is `generate.generate_function(causal_lm, cfg)`. Batches
    have a fixed size and prompt lengths padded to `PROMPT_STEP`, so
    XLA compiles few shapes. Returns per prompt {"text", "num_tokens",
    "stopped"} (stopped: an end-of-turn came within `max_new_tokens`).
    """
    stop_ids = tuple(tokenizer.special_id(t) for t in template.stop_tokens)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    replies: list[dict] = [{}] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        longest = max(len(prompts[i]) for i in rows)
        length = -(-longest // PROMPT_STEP) * PROMPT_STEP + max_new_tokens
        token_ids = np.full((batch_size, length), tokenizer.pad_id, np.int32)
        mask = np.zeros((batch_size, length), bool)
        for row in range(batch_size):  # short batches repeat their first prompt
            ids = prompts[rows[min(row, len(rows) - 1)]]
            token_ids[row, :len(ids)], mask[row, :len(ids)] = ids, True
        out = generate_fn({"token_ids": token_ids, "padding_mask": mask},
                          stop_token_ids=stop_ids)
        out_ids = np.asarray(out["token_ids"])
        for row, index in enumerate(rows):
            new = out_ids[row, len(prompts[index]):][:max_new_tokens]
            stops = [j for j, t in enumerate(new) if t in stop_ids]
            new = new[: stops[0]] if stops else new
            replies[index] = {"text": tokenizer.decode(new).strip(),
                              "num_tokens": len(new), "stopped": bool(stops)}
    return replies


def measure_latency(generate_fn, prompt: list[int], max_new_tokens: int,
                    pad_id: int, repeats: int = 3) -> dict[str, float]:
    """Generation latency of one prompt, with compile time kept apart.

    `generate_fn` is `generate.generate_function(causal_lm, cfg)`. Each
    shape is run once to compile, then `repeats` times; the median is
    the steady state. Time to first token is a generation of one new token
    (the prompt's prefill alone); tokens/s is `max_new_tokens` generated with no
    stop token, divided by the steady-state time. compile_s is what the
    first calls took beyond the steady state.
    """
    def timed(num_new: int) -> float:
        length = len(prompt) + num_new
        inputs = {"token_ids": np.full((1, length), pad_id, np.int32),
                  "padding_mask": np.zeros((1, length), bool)}
        inputs["token_ids"][0, :len(prompt)] = prompt
        inputs["padding_mask"][0, :len(prompt)] = True
        start = time.perf_counter()
        np.asarray(generate_fn(inputs, stop_token_ids=None)["token_ids"])
        return time.perf_counter() - start

    first_short, short = timed(1), float(np.median([timed(1) for _ in range(repeats)]))
    first_long = timed(max_new_tokens)
    long = float(np.median([timed(max_new_tokens) for _ in range(repeats)]))
    return {"ttft_s": short, "tokens_per_s": max_new_tokens / long,
            "generate_s": long, "compile_s": max(first_short - short, 0.0)
            + max(first_long - long, 0.0), "prompt_tokens": len(prompt),
            "new_tokens": max_new_tokens}


# ---------------------------------------------------------------- scoring


def score_model(causal_lm, heldout: HeldOut, cfg: Config, tokenizer: TextTokenizer,
                checks: tuple[str, ...], num_generate: int, batch_size: int = 8,
                latency: bool = True) -> dict:
    """All metrics of one model (base or tuned) on `heldout`."""
    from keras_ft.data import TokenizedDataset
    from keras_ft.generate import generate_function
    from keras_ft.tokens import tokenize_example
    from keras_ft.train import BatchSequence, CausalLMTrainer

    template = get_template(cfg.template)
    tokenized = TokenizedDataset.build(
        tokenize_example(e, template, tokenizer, cfg.sequence_length, True)
        for e in heldout.examples)
    dataset = BatchSequence(tokenized, batch_size, cfg.sequence_length,
                            tokenizer.pad_id, cfg.seed, shuffle=False)
    result = {"tokens": evaluate_tokens(CausalLMTrainer(causal_lm.backbone), dataset)}

    generate_fn = generate_function(causal_lm, cfg)
    examples = heldout.examples[:num_generate]
    prompts = [encode_prompt(e, template, tokenizer, cfg.sequence_length)[0]
               for e in examples]
    start = time.perf_counter()
    replies = generate_replies(generate_fn, prompts, template, tokenizer,
                               cfg.max_new_tokens, batch_size)
    result["generate_s"] = time.perf_counter() - start
    result["generations"] = [r["text"] for r in replies]
    references = [e.messages[-1].content for e in examples]
    result.update(score_generations(result["generations"], references, checks,
                                    heldout.labels))
    result["stopped"] = sum(r["stopped"] for r in replies) / max(len(replies), 1)
    result["new_tokens"] = metrics_text.length_stats([r["num_tokens"] for r in replies])
    if latency:
        result["latency"] = measure_latency(generate_fn, prompts[0], cfg.max_new_tokens,
                                            tokenizer.pad_id)
    return result


def score_generations(predictions: list[str], references: list[str],
                      checks: tuple[str, ...], labels: list[str]) -> dict:
    """Reference-based scores plus the named task checks."""
    rouge = [metrics_text.rouge_l(p, r)["f1"] for p, r in zip(predictions, references)]
    n = max(len(predictions), 1)
    scores = {"exact_match": sum(map(metrics_text.exact_match, predictions, references)) / n,
              "rouge_l": float(np.mean(rouge)) if rouge else 0.0, "rouge_l_each": rouge}
    if "steps" in checks:
        scores["steps"] = metrics_text.steps_summary(predictions)
    if "label" in checks:
        if not labels:
            raise ValueError("The `label` check needs a label set: frame the data as "
                             "classification, e.g. --fields prompt=headline,label=category.")
        scores["label"] = metrics_text.label_scores(predictions, references, labels)
    if "length" in checks:
        scores["length"] = metrics_text.text_lengths(predictions)
    return scores


def compare_base_and_tuned(cfg: Config, adapter: str, heldout: HeldOut,
                           checks: tuple[str, ...] = ("length",), num_generate: int = 32,
                           batch_size: int = 8, latency: bool = True) -> dict:
    """Scores `cfg.preset` as the adapter was trained on, then with `adapter`.

    The base is the one the adapter was trained on: quantized as recorded in
    its `adapter_config.json` (else `cfg.quantize`) for a QLoRA adapter, so the
    change from base to tuned is the adapter's alone, not quantization error.

    Returns:
        {"setup", "base", "tuned", "reference", "samples"}; see the report.
    """
    from keras_ft.model import (check_adapter, check_sequence_length, load_adapter,
                                load_causal_lm, quantize_backbone, read_adapter,
                                resolve_preset)

    adapter_file, recorded = read_adapter(adapter)
    quantize = recorded.get("quantize", cfg.quantize) or ""
    preset = resolve_preset(cfg.preset)
    tokenizer = TextTokenizer.from_preset(preset)
    check_sequence_length(preset, cfg.sequence_length)
    causal_lm = load_causal_lm(preset, dtype=cfg.dtype)
    check_adapter(causal_lm.backbone, adapter_file, recorded)  # before scoring the base
    quantize_backbone(causal_lm.backbone, quantize)
    args = (heldout, cfg, tokenizer, checks, num_generate, batch_size, latency)
    log.info("Scoring the base model (%s) on %d held-out examples.",
             base_description(cfg.preset, quantize), len(heldout.examples))
    base = score_model(causal_lm, *args)
    meta = load_adapter(causal_lm, adapter)  # base already quantized: adds LoRA only
    log.info("Scoring the tuned model (adapter %s).", adapter)
    tuned = score_model(causal_lm, *args)
    examples = heldout.examples[:num_generate]
    references = [e.messages[-1].content for e in examples]
    reference = score_generations(references, references,
                                  tuple(c for c in checks if c != "label"), heldout.labels)
    samples = [{"prompt": e.messages[-2].content, "turns": len(e.messages),
                "reference": r, "base": b, "tuned": t}
               for e, r, b, t in zip(examples, references, base["generations"],
                                     tuned["generations"])]
    setup = {"preset": cfg.preset, "quantize": quantize,
             "base": base_description(cfg.preset, quantize),
             "adapter": str(adapter), "adapter_config": meta,
             "data": heldout.source, "num_examples": len(heldout.examples),
             "num_generated": len(examples), "overlap_removed": heldout.num_overlap_removed,
             "labels": heldout.labels, "label_source": heldout.label_source,
             "template": cfg.template, "sampler": cfg.sampler,
             "max_new_tokens": cfg.max_new_tokens, "sequence_length": cfg.sequence_length,
             "checks": list(checks)}
    return {"setup": setup, "base": base, "tuned": tuned, "reference": reference,
            "samples": samples}


def base_description(preset: str, quantize: str) -> str:
    """How the base model was scored, e.g. "gemma3_270m quantized int8, as trained"."""
    return (f"{preset} quantized {quantize}, as trained" if quantize
            else f"{preset} (float, as trained)")


# ------------------------------------------------------------------------ CLI


def load_run_config(source: str | Path | Config | dict,
                    overrides: dict | None = None) -> Config:
    """A run's resolved `config.json` (or a Config / dict of its values), plus
    overrides.

    Read as JSON, not through the YAML loader: YAML 1.1 reads JSON's `5e-05`
    as a string.
    """
    if isinstance(source, Config):
        values = dataclasses.asdict(source)
    elif isinstance(source, dict):
        values = dict(source)
    else:
        try:
            values = json.loads(Path(source).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{source} is not valid JSON ({e}): the run's resolved "
                             "config is damaged. Pass --config with the experiment's "
                             "YAML instead, or train the run again.") from None
    return load_config(None, {**values, **{k: v for k, v in (overrides or {}).items()
                                           if v is not None}})


def resolve_run(adapter: str) -> tuple[Path | None, Config | None]:
    """(run directory, the config of the run that wrote `adapter`), else (None, None).

    The config is the one stored with the adapter: a checkpoint
    (`checkpoints/step-N/` or a file in it) carries its run's config in its
    `state.json`; a run directory's adapter (or its `best/` one) has the run's
    `config.json`, which keras_ft writes only once a run is accepted (a
    refused rerun leaves it as it was) and whose fresh start first deletes
    the previous run's adapter.
    """
    from keras_ft.checkpoint import STATE_FILE, read_state
    from keras_ft.rundir import MARKER

    path = Path(adapter)
    directory = path if path.is_dir() else path.parent
    if (directory / STATE_FILE).is_file():
        run_dir = (directory.parent.parent if directory.parent.name == "checkpoints"
                   else directory)
        return run_dir, load_run_config(read_state(directory)["config"])
    if directory.name == "best" and (directory.parent / MARKER).is_file():
        directory = directory.parent
    if (directory / "config.json").exists():
        return directory, load_run_config(directory / "config.json")
    return None, None


def adapter_defaults(adapter: str) -> dict:
    """preset, template and sequence_length recorded beside an adapter file."""
    from keras_ft.model import read_adapter

    meta = read_adapter(adapter)[1]  # names a damaged adapter_config.json
    return {k: meta[k] for k in ("preset", "template", "sequence_length") if k in meta}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--adapter", required=True, help="A .lora.h5 file or a run directory.")
@click.option("--preset", default=None, help="Base preset (default: the run's).")
@click.option("--data", default=None, help="Held-out data file or spec "
              "(default: the run's validation split).")
@click.option("--skip-examples", type=int, default=0, show_default=True,
              help="Skip this many usable examples of --data first.")
@click.option("--num-examples", type=int, default=200, show_default=True,
              help="Held-out examples for loss (0 = all).")
@click.option("--num-generate", type=int, default=32, show_default=True,
              help="Of those, how many to generate for.")
@click.option("--checks", default="length", show_default=True,
              help=f"Comma-separated task checks: {', '.join(CHECKS)}.")
@click.option("--config", "config_path", default=None,
              help="Experiment YAML (when the adapter is not in a run directory).")
@click.option("--template", default=None)
@click.option("--fields", default=None)
@click.option("--sequence-length", type=int, default=None)
@click.option("--max-new-tokens", type=int, default=None)
@click.option("--sampler", default="greedy", show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--latency/--no-latency", default=True, show_default=True)
@click.option("--output-dir", default=None, help="Report directory "
              "(default: <run>/eval, or eval_report).")
@cli_errors.reported
def main(adapter, preset, data, skip_examples, num_examples, num_generate, checks,
         config_path, template, fields, sequence_length, max_new_tokens, sampler,
         batch_size, latency, output_dir):
    """Compare a base preset and its LoRA-tuned version on held-out data."""
    from keras_ft.report import write_report

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    names = tuple(c.strip() for c in checks.split(",") if c.strip())
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise click.UsageError(f"Unknown check(s) {unknown}; choose from {list(CHECKS)}. "
                               f"Received: --checks {checks}")
    if num_generate < 1 or batch_size < 1 or num_examples < 0 or skip_examples < 0:
        raise click.UsageError(
            "--num-generate and --batch-size must be positive, --num-examples and "
            f"--skip-examples non-negative. Received: --num-generate {num_generate} "
            f"--batch-size {batch_size} --num-examples {num_examples} "
            f"--skip-examples {skip_examples}")
    from keras_ft.model import read_adapter

    read_adapter(adapter)  # a missing adapter is said before any data or model loads
    run_dir, run_cfg = resolve_run(adapter)
    overrides = {"preset": preset, "template": template, "fields": fields,
                 "sequence_length": sequence_length, "max_new_tokens": max_new_tokens,
                 "sampler": sampler}
    if not run_dir and not config_path:  # a bare adapter file: its own record
        overrides = {**adapter_defaults(adapter),
                     **{k: v for k, v in overrides.items() if v is not None}}
    with cli_errors.usage_errors():  # a flag or YAML value that does not validate
        cfg = (load_run_config(run_cfg, overrides)
               if run_dir and not config_path else load_config(config_path, overrides))
    heldout = load_heldout(cfg, data, skip_examples, num_examples, run_cfg)
    results = compare_base_and_tuned(cfg, adapter, heldout, names, num_generate,
                                     batch_size, latency)
    results["setup"]["command"] = "python -m keras_ft.evaluate " + " ".join(sys.argv[1:])
    out = Path(output_dir or (run_dir / "eval" if run_dir else "eval_report"))
    for path in write_report(results, out):
        click.echo(path)


if __name__ == "__main__":
    main()
