"""Model cards: the README.md every export carries (and a GGUF file's beside it).

A card says what the model is (the base, its license), how it was tuned (the
run's data, its full config), how well (base vs tuned metrics), the chat
template it expects, and how to load it in the tool its format is for. All of
it is read from what keras_ft wrote: the adapter's `adapter_config.json` and,
when the adapter lies in a run directory, that run's `config.json`,
`summary.json` and `eval/results.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keras_ft.model.lora import ADAPTER_CONFIG_FILE, ADAPTER_FILE
from keras_ft.templates import get_template

CARD_FILE = "README.md"

# The keras_ft template an export was tuned with, beside the exported files
# (keras-hub presets, transformers and PEFT have no field for it).
TEMPLATE_FILE = "keras_ft_template.json"

# (what the base's preset or backbone class name contains, the license, where it is)
LICENSES = (
    ("gemma", "Gemma Terms of Use", "https://ai.google.dev/gemma/terms"),
    ("llama3.2", "Llama 3.2 Community License", "https://www.llama.com/llama3_2/license/"),
    ("llama3.1", "Llama 3.1 Community License", "https://www.llama.com/llama3_1/license/"),
    ("llama3", "Llama 3 Community License", "https://www.llama.com/llama3/license/"),
)

FORMATS = ("preset", "hf", "peft", "gguf")

# How to load each format in the tool it is for; {path} is the export.
LOADING = {
    "preset": (
        "keras-hub (no keras_ft needed):",
        "python",
        "import keras_hub\n\n"
        'causal_lm = keras_hub.models.CausalLM.from_preset("{path}")\n'
        'print(causal_lm.generate("...", max_length=64))',
    ),
    "hf": (
        "Hugging Face transformers:",
        "python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'tokenizer = AutoTokenizer.from_pretrained("{path}")\n'
        'model = AutoModelForCausalLM.from_pretrained("{path}")\n'
        'messages = [{{"role": "user", "content": "..."}}]\n'
        "inputs = tokenizer.apply_chat_template(\n"
        "    messages, add_generation_prompt=True, return_tensors='pt', return_dict=True\n"
        ")\n"
        "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=64)[0]))",
    ),
    "peft": (
        "PEFT, on the base exported with `keras-ft export hf --preset BASE BASE_DIR`:",
        "python",
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM\n\n"
        'base = AutoModelForCausalLM.from_pretrained("BASE_DIR")\n'
        'model = PeftModel.from_pretrained(base, "{path}")\n'
        "model = model.merge_and_unload()  # optional: one plain model",
    ),
    "gguf": (
        "llama.cpp (the chat template is in the file):",
        "sh",
        'llama-cli -m {path} -cnv -p "You are a helpful assistant."',
    ),
}


def license_of(base: str, backbone: str = "") -> tuple[str, str]:
    """(license name, address) of a base model named `base` (a preset) with
    backbone class `backbone`; ("see the base model", "") when unknown."""
    names = f"{base} {backbone}".lower().replace("_", "").replace("-", "")
    for key, name, url in LICENSES:
        if key.replace(".", "") in names.replace(".", ""):
            return name, url
    return "see the base model", ""


def template_record(template: str | None) -> dict:
    """What `TEMPLATE_FILE` holds: the keras_ft template (name or format),
    its Jinja form, stop tokens and begin tokens; {} without a template."""
    if not template:
        return {}
    parsed = get_template(template)
    try:
        jinja = parsed.chat_template()
    except ValueError:  # a template with no Jinja form
        jinja = None
    return {
        "template": template,
        "chat_template": jinja,
        "stop_tokens": list(parsed.stop_tokens),
        "begin": list(parsed.begin),
    }


def run_dir_of(adapter: str | os.PathLike | None) -> Path | None:
    """The run directory an adapter (file or directory) was saved in, or None.

    A run directory holds `adapter_config.json` and a run's `config.json` or
    `summary.json`; an adapter in `RUN/adapter/` or a `.lora.h5` file in it
    counts as the run's.
    """
    if adapter is None:
        return None
    path = Path(adapter)
    candidates = [path] if path.is_dir() else [path.parent]
    candidates.append(candidates[0].parent)  # RUN/adapter/ or RUN/best/
    for directory in candidates:
        if (directory / "summary.json").exists() or (
            (directory / "config.json").exists() and (directory / ADAPTER_FILE).exists()
        ):
            return directory
    return None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # absent or damaged: the card leaves its section out


def _flat_metrics(values: dict, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of an evaluation's results, by dotted key."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = value
    return out


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _metrics_section(run_dir: Path) -> list[str]:
    """Base-vs-tuned metrics: `eval/results.json` when the run has one
    (`keras-ft evaluate`), else the run summary's held-out metrics."""
    results = _read_json(run_dir / "eval" / "results.json")
    if isinstance(results, dict) and "base" in results and "tuned" in results:
        source = f"`keras-ft evaluate` ({run_dir.name}/eval/results.json)"
        # Per-label tables and latencies are in the report; the card keeps scores.
        base, tuned = (
            {
                k: v
                for k, v in _flat_metrics(results[name]).items()
                if not k.startswith(("label.per_label.", "label.confusions.", "latency."))
            }
            for name in ("base", "tuned")
        )
    else:
        summary = _read_json(run_dir / "summary.json") or {}
        base = _flat_metrics(summary.get("metrics_before") or {})
        tuned = _flat_metrics(summary.get("metrics_after") or {})
        source = f"the held-out split during training ({run_dir.name}/summary.json)"
    keys = [k for k in tuned if k in base] + [k for k in tuned if k not in base]
    if not keys:
        return []
    lines = ["## Results: base vs tuned", "", f"Measured by {source}.", ""]
    lines += ["| metric | base | tuned |", "| --- | --- | --- |"]
    lines += [f"| {k} | {_fmt(base.get(k))} | {_fmt(tuned[k])} |" for k in keys]
    return lines + [""]


def _data_section(run_dir: Path) -> list[str]:
    summary = _read_json(run_dir / "summary.json") or {}
    data = summary.get("data") or {}
    if not data:
        return []
    lines = ["## Training data", ""]
    sources = data.get("sources") or {}
    if sources:
        lines += ["| source | examples kept |", "| --- | --- |"]
        lines += [f"| {spec} | {count} |" for spec, count in sources.items()]
        lines.append("")
    counts = [
        ("records read", data.get("num_seen")),
        ("kept", data.get("num_kept")),
        ("skipped", sum((data.get("skipped") or {}).values()) or 0),
        ("training examples", data.get("num_train")),
        ("held-out examples", data.get("num_validation")),
        ("removed from training: also held out", data.get("num_overlap_removed")),
    ]
    lines += [f"- {name}: {value}" for name, value in counts if value is not None]
    return lines + [""]


def model_card(
    fmt: str,
    base: str,
    adapter: str | os.PathLike | None = None,
    template: str | None = None,
    path: str = ".",
    backbone: str = "",
    notes: str = "",
) -> str:
    """The model card (Markdown) of one export.

    Args:
        fmt: The export's format, one of `FORMATS` (sets the loading snippet).
        base: The base preset (name or directory) the adapter was tuned on.
        adapter: The adapter (file or run directory) merged or converted,
            or None for a base model exported as is. A run directory's data,
            config and metrics go into the card.
        template: The keras_ft template it was tuned with (name or format);
            None: the one recorded with `adapter`, if any.
        path: What the loading snippet opens (the export's path or name).
        backbone: The backbone class name (for the license when the preset
            name does not say it).
        notes: More sentences, e.g. the QLoRA note of `export_preset`.

    Returns:
        The card's text, ending with a newline.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}. Received: fmt={fmt!r}")
    meta = {}
    if adapter is not None:
        adapter_dir = Path(adapter) if Path(adapter).is_dir() else Path(adapter).parent
        for directory in (adapter_dir, adapter_dir / "adapter"):
            found = _read_json(directory / ADAPTER_CONFIG_FILE)
            if isinstance(found, dict):
                meta = found
                break
    template = template or meta.get("template")
    backbone = backbone or meta.get("backbone", "")
    license_name, license_url = license_of(base, backbone)
    license_text = f"[{license_name}]({license_url})" if license_url else license_name
    what = f"`{base}` fine-tuned with LoRA by keras_ft" if adapter is not None else f"`{base}`"
    lines = [
        "---",
        f"library_name: {_LIBRARIES[fmt]}",
        f"base_model: {base}",
        "tags: [keras_ft, lora]",
        "---",
        "",
        f"# {Path(str(path)).name or base}",
        "",
        f"{what}, exported as {_FORMAT_NAMES[fmt]}.",
        "",
        "## Base model and license",
        "",
        f"- base model: `{base}`" + (f" ({backbone})" if backbone else ""),
        f"- license: {license_text}. This model is a derivative of the base model "
        "and is subject to its license.",
        "",
    ]
    if notes:
        lines += [notes, ""]
    if meta:
        lora = {k: meta[k] for k in ("lora_rank", "lora_alpha", "lora_targets", "quantize")}
        lines += ["## Adapter", "", "```json", json.dumps(lora, indent=2), "```", ""]
    run_dir = run_dir_of(adapter)
    if run_dir is not None:
        lines += _data_section(run_dir)
        config = _read_json(run_dir / "config.json")
        if isinstance(config, dict):
            lines += ["## Configuration", "", "The run's full `config.json`:", ""]
            lines += ["```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
        lines += _metrics_section(run_dir)
    record = template_record(template)
    if record:
        lines += [
            "## Chat template",
            "",
            f"Tuned with the keras_ft template `{template}`; replies end with "
            + ", ".join(f"`{t}`" for t in record["stop_tokens"])
            + f". The template is recorded in `{TEMPLATE_FILE}`"
            + (" and, as Jinja, below." if record["chat_template"] else "."),
            "",
        ]
        if record["chat_template"]:
            lines += ["```jinja", record["chat_template"], "```", ""]
    intro, language, code = LOADING[fmt]
    lines += [
        "## How to load it",
        "",
        intro,
        "",
        f"```{language}",
        code.format(path=path),
        "```",
        "",
    ]
    return "\n".join(lines)


_LIBRARIES = {"preset": "keras-hub", "hf": "transformers", "peft": "peft", "gguf": "gguf"}
_FORMAT_NAMES = {
    "preset": "a keras-hub preset (LoRA merged into the weights)",
    "hf": "Hugging Face transformers safetensors (LoRA merged into the weights)",
    "peft": "a PEFT LoRA adapter for the base model in transformers",
    "gguf": "a llama.cpp GGUF file (LoRA merged into the weights)",
}
