"""One experiment, several presets: a table and plots side by side.

    python -m keras_ft compare --config experiments/x.yaml --presets a,b

Every run gets the same Config (data, template, LoRA settings, steps) except
its preset (and, with `--templates`, its template; with `--vary`, one more
field). Each run is a separate `python -m keras_ft compare --worker` process,
so its peak memory (the process's `ru_maxrss`) and compile caches are its own
and one failing preset (say, no Kaggle access) does not stop the others.
A worker runs `finetune`, then loads the tuned model again to time
generation (`generation.generate.measure_latency`). The report holds training loss
curves, validation loss, training tokens/s, peak memory and generation latency.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
from keras_ft.config import Config, coerce_value, field_types, load_config, save_config
from keras_ft.data.tokenizer import TextTokenizer
from keras_ft.files import write_json
from keras_ft.generation.generate import encode_prompt, generate_function, measure_latency
from keras_ft.model.presets import resolve_preset
from keras_ft.pipeline import finetune
from keras_ft.templates import get_template
from keras_ft.train.rundir import claim

log = logging.getLogger(__name__)


RESULT_FILE = "compare_run.json"


@dataclasses.dataclass(frozen=True)
class Run:
    label: str
    cfg: Config


def plan_runs(
    cfg: Config,
    presets: list[str],
    templates: list[str],
    vary: tuple[str, list[str]] | None,
    output_dir: Path,
) -> list[Run]:
    """One Config per preset (x each `vary` value), each in its own directory.

    Raises:
        ValueError: templates not one per preset, or an invalid varied value.
    """
    if templates and len(templates) != len(presets):
        raise ValueError(
            f"`--templates` must give one template per preset "
            f"({len(presets)}). Received: --templates {','.join(templates)}"
        )
    if vary and vary[0] not in field_types():
        raise ValueError(f"`--vary` names no config field. Received: --vary {vary[0]}=...")
    runs = []
    for i, preset in enumerate(presets):
        values = vary[1] if vary else [None]
        for value in values:
            changes = {
                "preset": preset,
                "template": templates[i] if templates else cfg.template,
                "resume": False,
            }
            # A local preset directory is labelled by its name, not its full path.
            label = Path(preset).name if "/" in preset and "://" not in preset else preset
            if vary:
                changes[vary[0]] = coerce_value(vary[0], _scalar(value))
                label = f"{preset} {vary[0]}={value}"
            slug = re.sub(r"[^\w.-]+", "_", label).strip("_")
            changes["output_dir"] = str(output_dir / slug)
            runs.append(Run(label, load_config(None, {**dataclasses.asdict(cfg), **changes})))
    return runs


def _scalar(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def run_worker(cfg: Config) -> dict:
    """Trains one run in this process, then times generation; writes RESULT_FILE."""
    start = time.perf_counter()
    result = finetune(cfg)
    record = {
        "train_wall_s": time.perf_counter() - start,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    preset = resolve_preset(cfg.preset)
    # The trained model as it is in memory (the weights `adapter_path` holds):
    # no second load, and its generation loop is already compiled when the
    # run sampled greedily.
    generate_fn = generate_function(result.causal_lm, dataclasses.replace(cfg, sampler="greedy"))
    tokenizer = TextTokenizer.from_preset(preset)
    prompt = encode_prompt(cfg.sample_prompts[0], get_template(cfg.template), tokenizer)
    record["latency"] = measure_latency(generate_fn, prompt, cfg.max_new_tokens, tokenizer.pad_id)
    write_json(Path(cfg.output_dir) / RESULT_FILE, record)
    return record


def launch(run: Run, timeout: float | None = None) -> dict:
    """Runs one worker process; returns its measurements, or an error."""
    out = Path(run.cfg.output_dir)
    claim(out)  # a keras_ft run directory before worker.log is written into it
    (out / RESULT_FILE).unlink(missing_ok=True)
    request = out / "requested_config.json"
    save_config(run.cfg, request)
    log.info("== %s -> %s", run.label, out)
    start = time.perf_counter()
    with open(out / "worker.log", "w") as logfile:
        try:
            code = subprocess.run(
                [sys.executable, "-m", "keras_ft", "compare", "--worker", str(request)],
                stdout=logfile,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            ).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    record = {
        "label": run.label,
        "preset": run.cfg.preset,
        "template": run.cfg.template,
        "run_dir": str(out),
        "wall_s": time.perf_counter() - start,
    }
    if code != 0 or not (out / RESULT_FILE).exists():
        tail = (out / "worker.log").read_text(errors="replace").strip().splitlines()[-3:]
        record["error"] = f"exit {code}: " + " / ".join(tail)
        log.error("%s failed: %s", run.label, record["error"])
        return record
    record.update(json.loads((out / RESULT_FILE).read_text()))
    record.update(read_run(out))
    return record


def read_run(run_dir: Path) -> dict:
    """Loss curve, validation losses and throughput from a run directory."""
    steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    summary = json.loads((run_dir / "summary.json").read_text())
    curve = [[s["step"], s["loss"]] for s in steps if "epoch" not in s and "loss" in s]
    # Periodic evaluations (eval_every_steps) log `eval_loss`; Keras' own, `val_loss`.
    val_curve = [
        [s["step"], s.get("eval_loss", s.get("val_loss"))]
        for s in steps
        if "eval_loss" in s or ("val_loss" in s and "epoch" not in s)
    ]
    before, after = summary.get("metrics_before", {}), summary.get("metrics_after", {})
    return {
        "loss_curve": curve,
        "val_curve": val_curve,
        "val_loss_before": before.get("loss"),
        "val_loss_after": after.get("loss"),
        "val_ppl_after": after.get("perplexity"),
        "tokens_per_s": summary.get("tokens_per_s"),
        "train_compile_s": summary.get("compile_s"),
        "steps": curve[-1][0] if curve else 0,
    }
