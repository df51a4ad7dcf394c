"""Reports as Markdown plus one self-contained HTML page (plots inline).

A report is a list of blocks: `("h2", text)`, `("p", text)`,
`("table", headers, rows)` and `("figure", name, png_bytes)`. `write_pages`
renders them twice: `report.md` with the plots as PNG files beside it, and
`report.html` with the same plots embedded as base64 data URIs, so the page
can be mailed or attached on its own. `evaluation_blocks` builds the
base-vs-tuned report of `keras_ft.evaluate`; `keras_ft.compare` builds its own.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_ft.files import json_default, write_text  # noqa: E402

COLORS = {"base": "#8c8c8c", "tuned": "#1f77b4", "reference": "#2ca02c"}
SAMPLE_CHARS = 500  # longer sample texts are cut (the JSON keeps them whole)
CSS = (
    "body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;"
    "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top;text-align:left}"
    "th{background:#f4f4f4}td.text{white-space:pre-wrap;font-size:.9em;max-width:28em}"
    "img{max-width:100%;border:1px solid #eee}"
)


def png_bytes(figure) -> bytes:
    """A matplotlib figure as PNG bytes (and the figure closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not np.isfinite(value):
            return str(value)
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}" if abs(value) >= 1 else f"{value:.{digits}f}"
    return str(value)


def _cut(text: str, limit: int = SAMPLE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def render_markdown(title: str, blocks: Sequence[tuple], plot_dir: str) -> str:
    """Markdown with figures as links to `plot_dir/<name>.png`."""
    out = [f"# {title}", ""]
    for block in blocks:
        kind = block[0]
        if kind == "h2":
            out += [f"## {block[1]}", ""]
        elif kind == "p":
            out += [block[1], ""]
        elif kind == "table":
            out += [_md_row(block[1]), _md_row(["---"] * len(block[1]))]
            out += [_md_row(row) for row in block[2]] + [""]
        elif kind == "figure":
            out += [f"![{block[1]}]({plot_dir}/{block[1]}.png)", ""]
    return "\n".join(out)


def _md_row(cells: Sequence[Any]) -> str:
    cells = [fmt(c).replace("|", "\\|").replace("\r", "").replace("\n", "<br>") for c in cells]
    return "| " + " | ".join(cells) + " |"


def render_html(title: str, blocks: Sequence[tuple]) -> str:
    """One HTML page; every figure is an inline base64 PNG."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for block in blocks:
        kind = block[0]
        if kind == "h2":
            out.append(f"<h2>{html.escape(block[1])}</h2>")
        elif kind == "p":
            out.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "table":
            out.append(
                "<table><tr>"
                + "".join(f"<th>{html.escape(fmt(h))}</th>" for h in block[1])
                + "</tr>"
            )
            for row in block[2]:
                cells = "".join(
                    f'<td class="text">{html.escape(fmt(c))}</td>'
                    if isinstance(c, str) and len(c) > 40
                    else f"<td>{html.escape(fmt(c))}</td>"
                    for c in row
                )
                out.append(f"<tr>{cells}</tr>")
            out.append("</table>")
        elif kind == "figure":
            data = base64.b64encode(block[2]).decode("ascii")
            out.append(
                f'<p><img alt="{html.escape(block[1])}" src="data:image/png;base64,{data}"></p>'
            )
    return "\n".join(out + ["</body></html>", ""])


def write_pages(
    title: str, blocks: Sequence[tuple], out_dir: str | Path, data: dict | None = None
) -> list[Path]:
    """Writes report.md (+ plots/*.png), report.html and results.json.

    Returns:
        The paths written: Markdown, HTML, then JSON when `data` is given.
    """
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    for block in blocks:
        if block[0] == "figure":
            (out_dir / "plots" / f"{block[1]}.png").write_bytes(block[2])
    paths = [
        (out_dir / "report.md", render_markdown(title, blocks, "plots")),
        (out_dir / "report.html", render_html(title, blocks)),
    ]
    if data is not None:
        paths.append((out_dir / "results.json", json.dumps(data, indent=2, default=json_default)))
    for path, text in paths:
        write_text(path, text + ("\n" if not text.endswith("\n") else ""))
    return [path for path, _ in paths]


# ------------------------------------------------------- base vs tuned report


# (section the row needs in the results or None, label, dotted key, with reference)
METRIC_ROWS = (
    (None, "held-out loss (response tokens)", "tokens.loss", False),
    (None, "perplexity", "tokens.perplexity", False),
    (None, "next-token accuracy", "tokens.accuracy", False),
    (None, "exact match", "exact_match", False),
    (None, "ROUGE-L F1", "rouge_l", False),
    ("steps", "steps: adherence (numbered 1., 2., ... no preamble)", "steps.adherence", True),
    ("steps", "steps: ordered numbered list anywhere", "steps.ordered_list", True),
    ("steps", "steps: conversational preamble", "steps.preamble", True),
    ("steps", "steps: mean items", "steps.mean_items", True),
    ("label", "label accuracy", "label.accuracy", False),
    ("label", "label: output is in the label set", "label.valid", False),
    ("label", "label accuracy of always the majority label", "label.majority_accuracy", True),
    ("length", "length: mean words", "length.words.mean", True),
    ("length", "length: median words", "length.words.median", True),
    ("length", "length: p90 words", "length.words.p90", True),
    (None, "replies ended by end-of-turn", "stopped", False),
    (None, "replies repeating one of their lines", "repeated_line", False),
    (None, "new tokens per reply (mean)", "new_tokens.mean", False),
    ("latency", "latency: time to first token (s)", "latency.ttft_s", False),
    ("latency", "latency: tokens/s", "latency.tokens_per_s", False),
    ("latency", "latency: compile time (s, first calls)", "latency.compile_s", False),
)


def metric_rows(results: dict) -> list[list]:
    """[metric, base, tuned, change, reference] rows of an evaluation."""
    base, tuned, ref = results["base"], results["tuned"], results["reference"]

    def row(name, getter, with_ref=False):
        b, t = _get(base, getter), _get(tuned, getter)
        change = t - b if isinstance(b, (int, float)) and isinstance(t, (int, float)) else None
        return [name, b, t, change, _get(ref, getter) if with_ref else None]

    return [
        row(name, getter, with_ref)
        for section, name, getter, with_ref in METRIC_ROWS
        if section is None or section in base
    ]


def _get(values: dict, dotted: str):
    for key in dotted.split("."):
        if not isinstance(values, dict) or key not in values:
            return None
        values = values[key]
    return values


def evaluation_blocks(results: dict) -> list[tuple]:
    """The blocks of the base-vs-tuned report."""
    setup = results["setup"]
    blocks = [
        (
            "table",
            ["setting", "value"],
            [
                ["base", setup.get("base", setup["preset"])],
                ["adapter", setup["adapter"]],
                ["held-out data", setup["data"]],
                [
                    "examples (loss / generated)",
                    f"{setup['num_examples']} / {setup['num_generated']}",
                ],
                ["removed: also in training", setup["overlap_removed"]],
                ["template", setup["template"]],
                ["generation", f"{setup['sampler']}, at most {setup['max_new_tokens']} new tokens"],
                ["checks", ", ".join(setup["checks"])],
            ]
            + ([["command", setup["command"]]] if setup.get("command") else []),
        )
    ]
    blocks += [
        ("h2", "Scores"),
        (
            "p",
            f"The base column scores {setup.get('base', setup['preset'])}, "
            "without the adapter; the tuned column, the same base with it. "
            "Loss and perplexity are over response tokens only (prompt "
            "tokens bear no loss). Exact match and ROUGE-L F1 (LCS of lowercase "
            "word tokens) compare each generation with the reference reply; "
            "generations stop at the end-of-turn or after max_new_tokens, which "
            "caps recall on long references. The reference column scores the "
            "references themselves.",
        ),
        ("table", ["metric", "base", "tuned", "change", "reference"], metric_rows(results)),
        ("figure", "scores", plot_scores(results)),
    ]
    if "length" in results["base"]:
        blocks.append(("figure", "lengths", plot_lengths(results)))
    if "label" in results["base"]:
        blocks += label_blocks(results)
    if "latency" in results["base"]:
        blocks += [
            ("h2", "Generation latency"),
            (
                "p",
                "Batch 1, one held-out prompt, steady state (median of 3 after "
                "a compiling call). Time to first token = a 1-new-token "
                "generation (prefill + one step); tokens/s = max_new_tokens with "
                "no stop token / time. The tuned model runs the LoRA adapter "
                "unmerged.",
            ),
            ("figure", "latency", plot_latency(results)),
        ]
    blocks += [
        ("h2", "Samples"),
        (
            "table",
            ["prompt", "reference", "base", "tuned"],
            [
                [
                    _cut(s["prompt"])
                    + (f"\n(turn {s['turns'] // 2} of a chat)" if s["turns"] > 2 else ""),
                    _cut(s["reference"]),
                    _cut(s["base"]),
                    _cut(s["tuned"]),
                ]
                for s in results["samples"][:8]
            ],
        ),
    ]
    return blocks


def label_blocks(results: dict) -> list[tuple]:
    blocks = [
        ("h2", "Labels"),
        (
            "p",
            f"{results['tuned']['label']['num_labels']} labels (from the "
            f"{results['setup']['label_source']}). A generation counts when it "
            "equals a label after normalisation; anything else is (invalid). "
            f"The majority-class baseline always answers "
            f"{results['setup'].get('majority_label') or '-'} (the most frequent "
            f"label of the {results['setup']['label_source']}): label accuracy "
            f"{_get(results['reference'], 'label.majority_accuracy') or 0:.3f} "
            "on the generated examples.",
        ),
    ]
    for name in ("base", "tuned"):
        confusions = results[name]["label"]["confusions"]
        blocks += [
            ("p", f"Most frequent errors, {name}:"),
            (
                "table",
                ["true", "generated", "count"],
                [[t, _cut(p, 80), c] for t, p, c in confusions] or [["-", "-", 0]],
            ),
        ]
    per_label = results["tuned"]["label"]["per_label"]
    blocks.append(
        (
            "table",
            ["label", "support", "base recall", "tuned recall", "tuned precision"],
            [
                [
                    label,
                    v["support"],
                    results["base"]["label"]["per_label"][label]["recall"],
                    v["recall"],
                    v["precision"],
                ]
                for label, v in per_label.items()
            ],
        )
    )
    blocks.append(("figure", "confusion", plot_confusion(results)))
    return blocks


def plot_scores(results: dict) -> bytes:
    names = [
        ("next-token acc.", "tokens.accuracy"),
        ("exact match", "exact_match"),
        ("ROUGE-L F1", "rouge_l"),
        ("steps adherence", "steps.adherence"),
        ("label accuracy", "label.accuracy"),
    ]
    names = [(n, k) for n, k in names if _get(results["base"], k) is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    x = np.arange(len(names))
    for offset, model in ((-0.2, "base"), (0.2, "tuned")):
        left.bar(
            x + offset,
            [_get(results[model], k) for _, k in names],
            0.4,
            label=model,
            color=COLORS[model],
        )
        right.bar(offset, _get(results[model], "tokens.loss"), 0.4, color=COLORS[model])
    left.set_xticks(x, [n for n, _ in names])
    left.set_ylim(0, 1)
    left.set_title("scores (higher is better)")
    left.legend()
    right.set_xticks([-0.2, 0.2], ["base", "tuned"])
    right.set_title("held-out loss")
    return png_bytes(fig)


def plot_lengths(results: dict) -> bytes:
    fig, ax = plt.subplots(figsize=(7, 3.4))
    texts = {
        "reference": [s["reference"] for s in results["samples"]],
        "base": results["base"]["generations"],
        "tuned": results["tuned"]["generations"],
    }
    words = {k: [len(t.split()) for t in v] for k, v in texts.items()}
    bins = np.linspace(0, max(max(v, default=1) for v in words.values()) + 1, 21)
    for name, values in words.items():
        ax.hist(values, bins=bins, histtype="step", linewidth=2, label=name, color=COLORS[name])
    ax.set_xlabel("words per reply")
    ax.set_ylabel("replies")
    ax.legend()
    return png_bytes(fig)


def plot_latency(results: dict) -> bytes:
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, (key, title) in zip(
        axes,
        (
            ("ttft_s", "time to first token (s)"),
            ("tokens_per_s", "tokens/s"),
            ("compile_s", "compile time (s)"),
        ),
    ):
        ax.bar(
            ["base", "tuned"],
            [results[m]["latency"][key] for m in ("base", "tuned")],
            color=[COLORS["base"], COLORS["tuned"]],
        )
        ax.set_title(title)
    return png_bytes(fig)


def plot_confusion(results: dict) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, model in zip(axes, ("base", "tuned")):
        matrix = results[model]["label"]["matrix"]
        counts = np.asarray(matrix["counts"])
        ax.imshow(counts, cmap="Blues")
        ax.set_xticks(
            range(len(matrix["labels"])), matrix["labels"], rotation=60, ha="right", fontsize=8
        )
        ax.set_yticks(range(len(matrix["labels"])), matrix["labels"], fontsize=8)
        for (i, j), count in np.ndenumerate(counts):
            if count:
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7)
        ax.set_title(f"{model}: true (rows) vs generated (columns)")
    return png_bytes(fig)


def write_report(results: dict, out_dir: str | Path) -> list[Path]:
    """Writes the base-vs-tuned report (Markdown, HTML, JSON) to `out_dir`."""
    title = f"Base vs tuned: {results['setup']['preset']}"
    return write_pages(title, evaluation_blocks(results), out_dir, results)


# ------------------------------------------------------- preset comparison


COMPARE_COLUMNS = [
    ("run", "label"),
    ("steps", "steps"),
    ("final train loss", "final_loss"),
    ("val loss base", "val_loss_before"),
    ("val loss tuned", "val_loss_after"),
    ("val ppl tuned", "val_ppl_after"),
    ("train tokens/s", "tokens_per_s"),
    ("train compile s", "train_compile_s"),
    ("peak RSS MB", "peak_rss_mb"),
    ("TTFT s", "latency.ttft_s"),
    ("gen tokens/s", "latency.tokens_per_s"),
    ("gen compile s", "latency.compile_s"),
    ("wall s", "wall_s"),
    ("error", "error"),
]


def comparison_rows(records: Sequence[dict]) -> list[list]:
    rows = []
    for record in records:
        record = {
            **record,
            "final_loss": record["loss_curve"][-1][1] if record.get("loss_curve") else None,
        }
        rows.append([_get(record, key) for _, key in COMPARE_COLUMNS])
    return rows


def plot_comparison(records: Sequence[dict]) -> bytes:
    ok = [r for r in records if "error" not in r]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    ax = axes[0, 0]
    for r in ok:
        steps, losses = zip(*r["loss_curve"]) if r["loss_curve"] else ((), ())
        ax.plot(steps, losses, label=r["label"], alpha=0.8)
        if r.get("val_curve"):
            ax.plot(*zip(*r["val_curve"]), "o--", color=ax.lines[-1].get_color())
    ax.set(title="training loss (dots: validation)", xlabel="step")
    ax.legend(fontsize=7)
    labels = [r["label"] for r in ok]
    x = np.arange(len(ok))
    ax = axes[0, 1]
    ax.bar(
        x - 0.2,
        [r.get("val_loss_before") or 0 for r in ok],
        0.4,
        label="base",
        color=COLORS["base"],
    )
    ax.bar(
        x + 0.2,
        [r.get("val_loss_after") or 0 for r in ok],
        0.4,
        label="tuned",
        color=COLORS["tuned"],
    )
    ax.set_title("validation loss")
    ax.legend()
    bars = [
        (axes[0, 2], "tokens_per_s", "training tokens/s"),
        (axes[1, 0], "peak_rss_mb", "peak memory (RSS, MB)"),
        (axes[1, 1], "latency.ttft_s", "time to first token (s)"),
        (axes[1, 2], "latency.tokens_per_s", "generation tokens/s"),
    ]
    for ax, key, title in bars:
        ax.bar(x, [_get(r, key) or 0 for r in ok], color=COLORS["tuned"])
        ax.set_title(title)
    for ax in list(axes.flat)[1:]:
        ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=8)
    fig.tight_layout()
    return png_bytes(fig)


def write_comparison(records: Sequence[dict], out_dir: str | Path, command: str = "") -> list[Path]:
    """Writes the preset comparison (Markdown, HTML, JSON) to `out_dir`."""
    blocks = [("p", f"Command: {command}")] if command else []
    blocks += [
        (
            "p",
            "Each run is its own process. Validation loss is over response "
            "tokens of the held-out split, before (base) and after training. "
            "Training tokens/s excludes the first (compiling) step. Peak RSS is "
            "the worker's ru_maxrss after training. Latency: batch 1, the first "
            "sample prompt, tuned model with LoRA unmerged, steady state; "
            "compile time apart.",
        ),
        ("table", [name for name, _ in COMPARE_COLUMNS], comparison_rows(records)),
    ]
    if any("error" not in r for r in records):
        blocks.append(("figure", "comparison", plot_comparison(records)))
    return write_pages("Preset comparison", blocks, out_dir, {"runs": list(records)})
