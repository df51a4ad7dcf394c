"""What is in the data, before training: the numbers the seed users got by hand.

Record counts and skips, token lengths under the chosen template and
tokenizer (and how many would be truncated at `sequence_length`), the label
or topic distribution, duplicates, and rendered examples with the loss-bearing
part marked `[[like this]]`. `python -m keras_ft data stats` prints this.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from keras_ft.config import Config
from keras_ft.data.records import LoadReport
from keras_ft.data.split import example_hash, read_data
from keras_ft.data.tokenizer import TextTokenizer, format_marked, tokenize_example
from keras_ft.templates import Example, Template, get_template

log = logging.getLogger(__name__)
_NO_LIMIT = 1 << 30  # a sequence length nothing reaches: measures full lengths


@dataclasses.dataclass
class DataStats:
    report: LoadReport
    num_examples: int
    num_duplicates: int  # examples equal to an earlier one
    num_duplicate_prompts: int  # same prompt as an earlier example, any reply
    assistant_turns: collections.Counter  # examples by number of replies
    labels: collections.Counter  # classification labels, if any
    topics: collections.Counter  # first content word of the first user message
    char_lengths: np.ndarray  # characters per example
    sequence_length: int
    token_lengths: np.ndarray | None = None  # tokens per example, untruncated
    num_truncated: int = 0  # longer than sequence_length (+1 for the labels)
    num_dropped: int = 0  # no loss token left after truncation
    rendered: list = dataclasses.field(default_factory=list)


def collect_stats(
    cfg: Config, tokenizer: TextTokenizer | None = None, num_rendered: int = 3
) -> DataStats:
    """Reads all of `cfg.data` (no split) and computes `DataStats`.

    Args:
        cfg: data options plus `template` and `sequence_length`.
        tokenizer: the preset's tokenizer, to measure tokens; None skips
            the token figures.
        num_rendered: how many examples to render with the loss marked.
    """
    report = LoadReport()
    return compute_stats(
        read_data(cfg, report),
        report,
        get_template(cfg.template),
        tokenizer,
        cfg.sequence_length,
        cfg.completion_only_loss,
        num_rendered,
    )


def compute_stats(
    examples: Iterable[Example],
    report: LoadReport,
    template: Template,
    tokenizer: TextTokenizer | None = None,
    sequence_length: int = 256,
    completion_only: bool = True,
    num_rendered: int = 3,
) -> DataStats:
    """Computes `DataStats` in one pass; token figures need a tokenizer.

    Memory holds two hashes and a few numbers per example, so `examples` can
    be a stream larger than memory. Two examples are the same when their
    `example_key`s are (the identity the split uses).
    """
    seen, prompts = set(), set()
    stats = DataStats(
        report=report,
        num_examples=0,
        num_duplicates=0,
        num_duplicate_prompts=0,
        assistant_turns=collections.Counter(),
        labels=collections.Counter(),
        topics=collections.Counter(),
        char_lengths=np.zeros(0, np.int64),
        sequence_length=sequence_length,
    )
    char_lengths, token_lengths = [], []
    for example in examples:
        key_hash = example_hash(example)
        prompt_hash = example_hash(Example(example.messages[:-1]))  # all but the reply
        stats.num_examples += 1
        stats.num_duplicates += key_hash in seen
        stats.num_duplicate_prompts += prompt_hash in prompts
        seen.add(key_hash)
        prompts.add(prompt_hash)
        stats.assistant_turns[sum(m.role == "assistant" for m in example.messages)] += 1
        if example.label is not None:
            stats.labels[example.label] += 1
        stats.topics[_topic(example)] += 1
        char_lengths.append(sum(len(m.content) for m in example.messages))
        if tokenizer is not None:
            full = tokenize_example(example, template, tokenizer, _NO_LIMIT, completion_only)
            if full is None or not full.loss_mask[1 : sequence_length + 1].any():
                stats.num_dropped += 1
            if full is not None:
                token_lengths.append(full.num_tokens_before_truncation)
                stats.num_truncated += full.num_tokens_before_truncation > sequence_length + 1
        if len(stats.rendered) < num_rendered:
            stats.rendered.append(
                _render(example, template, tokenizer, sequence_length, completion_only)
            )
    stats.char_lengths = np.asarray(char_lengths, np.int64)
    if tokenizer is not None:
        stats.token_lengths = np.asarray(token_lengths, np.int64)
    return stats


def _render(
    example: Example,
    template: Template,
    tokenizer: TextTokenizer | None,
    sequence_length: int,
    completion_only: bool,
) -> str:
    """One example as training sees it, loss tokens marked."""
    if tokenizer is None:
        return render_marked(example, template)
    tokenized = tokenize_example(example, template, tokenizer, sequence_length, completion_only)
    if tokenized is not None:
        return format_marked(tokenized, tokenizer)
    # Dropped: show it whole, so the user sees why.
    tokenized = tokenize_example(example, template, tokenizer, _NO_LIMIT, completion_only)
    return (
        f"(dropped: no response token within sequence_length={sequence_length}; "
        f"shown untruncated)\n" + format_marked(tokenized, tokenizer)
    )


_QUESTION_WORDS = frozenset(
    "a an the how what which who why when where is are was do does did can could "
    "should would will i you me my we our to of in on for please give tell".split()
)


def _topic(example: Example) -> str:
    """First content word of the first user message: a cheap topic proxy
    ("How do I cook rice?" -> "cook", "What is the capital..." -> "capital")."""
    user = next((m.content for m in example.messages if m.role == "user"), "")
    words = [w.strip(".,:;!?'\"()").lower() for w in user.split()]
    return next((w for w in words if w and w not in _QUESTION_WORDS), "")


def render_marked(example: Example, template: Template) -> str:
    """The rendered text, with loss-bearing segments in [[ ]] (no tokenizer)."""
    return "".join(
        f"[[{s.text}]]" if s.trainable else s.text for s in template.render(example.messages)
    )


def _distribution(values: np.ndarray) -> str:
    if not len(values):
        return "none"
    p50, p90, p99 = np.percentile(values, [50, 90, 99]).astype(int)
    return (
        f"min {values.min()}, median {p50}, mean {values.mean():.0f}, "
        f"p90 {p90}, p99 {p99}, max {values.max()}"
    )


def format_stats(stats: DataStats) -> str:
    """A plain-text report of `stats`."""
    n = max(stats.num_examples, 1)
    lines = [
        stats.report.summary(),
        f"Examples: {stats.num_examples}; record shapes: {dict(stats.report.shapes)}",
        f"Assistant turns per example: {dict(sorted(stats.assistant_turns.items()))}",
        f"Duplicates: {stats.num_duplicates} identical examples, "
        f"{stats.num_duplicate_prompts} repeated prompts",
        f"Characters per example: {_distribution(stats.char_lengths)}",
    ]
    if stats.token_lengths is not None:
        lines += [
            f"Tokens per example: {_distribution(stats.token_lengths)}",
            f"Truncated at sequence_length={stats.sequence_length}: "
            f"{stats.num_truncated} ({100 * stats.num_truncated / n:.1f} %); "
            f"dropped (response cut off entirely): {stats.num_dropped}",
        ]
    counts, title = (
        (stats.labels, "Labels")
        if stats.labels
        else (stats.topics, "Prompt topics (first content word)")
    )
    lines.append(f"{title} ({len(counts)} distinct), top 15:")
    lines += [
        f"  {count:6d}  {100 * count / n:5.1f} %  {value}"
        for value, count in counts.most_common(15)
    ]
    for i, text in enumerate(stats.rendered):
        lines += [f"--- example {i} (loss-bearing tokens in [[ ]]) ---", text]
    return "\n".join(lines)


def plot_stats(stats: DataStats, path: str | Path) -> Path:
    """Writes a PNG: the length histogram and the label/topic distribution."""
    import matplotlib  # heavy: matplotlib, only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: matplotlib (after the Agg backend is chosen)

    path = Path(path)
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    tokens = stats.token_lengths is not None
    lengths = stats.token_lengths if tokens else stats.char_lengths
    left.hist(lengths, bins=50, color="tab:blue")
    if tokens:
        left.axvline(
            stats.sequence_length,
            color="tab:red",
            linestyle="--",
            label=f"sequence_length={stats.sequence_length}",
        )
        left.legend()
    left.set_xlabel("tokens per example" if tokens else "characters per example")
    left.set_ylabel("examples")
    counts = stats.labels or stats.topics
    top = counts.most_common(20)[::-1]
    right.barh([str(v)[:30] for v, _ in top], [c for _, c in top], color="tab:green")
    right.set_title("labels" if stats.labels else "prompt topics")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path, dpi=100, format="png")
    finally:
        plt.close(figure)
    return path
