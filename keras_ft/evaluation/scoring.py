"""Did fine-tuning help? Base and tuned model scored on the same held-out data.

`evaluate_tokens` gives held-out loss, perplexity and token accuracy over
loss-bearing (response) tokens. `compare_base_and_tuned` loads a preset, scores
it as the adapter was trained on (quantized, for a QLoRA adapter), applies the
LoRA adapter and scores it again on the same examples:
token metrics, greedy generations against references (exact match, ROUGE-L;
see `metrics_text`), the task checks named in `checks` (`steps`, `label`,
`length`) and generation latency. `python -m keras_ft evaluate` writes the
results as a Markdown and an HTML report (`keras_ft.report`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
import numpy as np

from keras_ft.config import Config
from keras_ft.data.batches import BatchSequence
from keras_ft.data.token_cache import TokenizedDataset
from keras_ft.data.tokenizer import TextTokenizer, tokenize_example
from keras_ft.distribution import placed
from keras_ft.evaluation import metrics_text
from keras_ft.evaluation.heldout import HeldOut
from keras_ft.generation.generate import (
    encode_prompt,
    generate_function,
    generate_replies,
    measure_latency,
)
from keras_ft.model.causal_lm import load_causal_lm
from keras_ft.model.lora import (
    check_adapter,
    load_adapter,
    quantize_backbone,
    read_adapter,
)
from keras_ft.model.presets import check_sequence_length, resolve_preset
from keras_ft.templates import get_template
from keras_ft.train.trainer import CausalLMTrainer, evaluate_tokens

log = logging.getLogger(__name__)


CHECKS = ("steps", "label", "length")


def score_model(
    causal_lm,
    heldout: HeldOut,
    cfg: Config,
    tokenizer: TextTokenizer,
    checks: tuple[str, ...],
    num_generate: int,
    batch_size: int = 8,
    latency: bool = True,
) -> dict:
    """All metrics of one model (base or tuned) on `heldout`."""
    template = get_template(cfg.template)
    tokenized = TokenizedDataset.build(
        tokenize_example(e, template, tokenizer, cfg.sequence_length, True)
        for e in heldout.examples
    )
    dataset = BatchSequence(
        tokenized, batch_size, cfg.sequence_length, tokenizer.pad_id, cfg.seed, shuffle=False
    )
    result = {"tokens": evaluate_tokens(CausalLMTrainer(causal_lm.backbone), dataset)}

    generate_fn = generate_function(causal_lm, cfg)
    examples = heldout.examples[:num_generate]
    prompts = [
        encode_prompt(e.messages[:-1], template, tokenizer, cfg.sequence_length) for e in examples
    ]
    start = time.perf_counter()
    replies = generate_replies(
        generate_fn, prompts, template, tokenizer, cfg.max_new_tokens, batch_size
    )
    result["generate_s"] = time.perf_counter() - start
    result["generations"] = [r["text"] for r in replies]
    references = [e.messages[-1].content for e in examples]
    result.update(score_generations(result["generations"], references, checks, heldout.labels))
    result["stopped"] = sum(r["stopped"] for r in replies) / max(len(replies), 1)
    result["repeated_line"] = sum(bool(r["repeated_line"]) for r in replies) / max(len(replies), 1)
    result["new_tokens"] = metrics_text.length_stats([r["num_tokens"] for r in replies])
    if latency:
        result["latency"] = measure_latency(
            generate_fn, prompts[0], cfg.max_new_tokens, tokenizer.pad_id
        )
    return result


def score_generations(
    predictions: list[str], references: list[str], checks: tuple[str, ...], labels: list[str]
) -> dict:
    """Reference-based scores plus the named task checks."""
    rouge = [metrics_text.rouge_l(p, r)["f1"] for p, r in zip(predictions, references)]
    n = max(len(predictions), 1)
    scores = {
        "exact_match": sum(map(metrics_text.exact_match, predictions, references)) / n,
        "rouge_l": float(np.mean(rouge)) if rouge else 0.0,
        "rouge_l_each": rouge,
    }
    if "steps" in checks:
        scores["steps"] = metrics_text.steps_summary(predictions)
    if "label" in checks:
        if not labels:
            raise ValueError(
                "The `label` check needs a label set: frame the data as "
                "classification, e.g. --fields prompt=headline,label=category."
            )
        scores["label"] = metrics_text.label_scores(predictions, references, labels)
    if "length" in checks:
        scores["length"] = metrics_text.text_lengths(predictions)
    return scores


def compare_base_and_tuned(
    cfg: Config,
    adapter: str,
    heldout: HeldOut,
    checks: tuple[str, ...] = ("length",),
    num_generate: int = 32,
    batch_size: int = 8,
    latency: bool = True,
) -> dict:
    """Scores `cfg.preset` as the adapter was trained on, then with `adapter`.

    The base is the one the adapter was trained on: quantized as recorded in
    its `adapter_config.json` (else `cfg.quantize`) for a QLoRA adapter, so the
    change from base to tuned is the adapter's alone, not quantization error.

    Returns:
        {"setup", "base", "tuned", "reference", "samples"}; see the report.
    """
    quantize = read_adapter(adapter)[1].get("quantize", cfg.quantize) or ""
    preset = resolve_preset(cfg.preset)
    check_sequence_length(preset, cfg.sequence_length)
    # The mesh (`cfg.mesh`; one device by default) for loading and scoring both
    # models, planned for the base as the adapter was trained on it.
    with placed(dataclasses.replace(cfg, quantize=quantize), preset):
        args = (heldout, cfg, TextTokenizer.from_preset(preset), checks)
        return _compare(preset, adapter, quantize, args, num_generate, batch_size, latency)


def _compare(preset, adapter, quantize, args, num_generate, batch_size, latency) -> dict:
    heldout, cfg, tokenizer, checks = args
    adapter_file, recorded = read_adapter(adapter)
    causal_lm = load_causal_lm(preset, dtype=cfg.dtype)
    check_adapter(causal_lm.backbone, adapter_file, recorded)  # before scoring the base
    quantize_backbone(causal_lm.backbone, quantize)
    args = (heldout, cfg, tokenizer, checks, num_generate, batch_size, latency)
    log.info(
        "Scoring the base model (%s) on %d held-out examples.",
        base_description(cfg.preset, quantize),
        len(heldout.examples),
    )
    base = score_model(causal_lm, *args)
    meta = load_adapter(causal_lm, adapter)  # base already quantized: adds LoRA only
    log.info("Scoring the tuned model (adapter %s).", adapter)
    tuned = score_model(causal_lm, *args)
    examples = heldout.examples[:num_generate]
    references = [e.messages[-1].content for e in examples]
    reference = score_generations(
        references, references, tuple(c for c in checks if c != "label"), heldout.labels
    )
    if "label" in checks:
        # What always answering the majority label scores on the same examples.
        hits = sum(r == heldout.majority_label for r in references)
        reference["label"] = {"majority_accuracy": hits / max(len(references), 1)}
    samples = [
        {
            "prompt": e.messages[-2].content,
            "turns": len(e.messages),
            "reference": r,
            "base": b,
            "tuned": t,
        }
        for e, r, b, t in zip(examples, references, base["generations"], tuned["generations"])
    ]
    setup = {
        "preset": cfg.preset,
        "quantize": quantize,
        "base": base_description(cfg.preset, quantize),
        "adapter": str(adapter),
        "adapter_config": meta,
        "data": heldout.source,
        "num_examples": len(heldout.examples),
        "num_generated": len(examples),
        "overlap_removed": heldout.num_overlap_removed,
        "labels": heldout.labels,
        "label_source": heldout.label_source,
        "majority_label": heldout.majority_label,
        "template": cfg.template,
        "sampler": cfg.sampler,
        "max_new_tokens": cfg.max_new_tokens,
        "sequence_length": cfg.sequence_length,
        "checks": list(checks),
    }
    return {
        "setup": setup,
        "base": base,
        "tuned": tuned,
        "reference": reference,
        "samples": samples,
    }


def base_description(preset: str, quantize: str) -> str:
    """How the base model was scored, e.g. "gemma3_270m quantized int8, as trained"."""
    return (
        f"{preset} quantized {quantize}, as trained"
        if quantize
        else f"{preset} (float, as trained)"
    )
