"""Data stage on a large chat file: keras_ft's streaming token cache vs the seed's way.

The real ShareGPT subset in ../shared/data (2,000 multi-turn conversations),
repeated `--copies` times with each copy's first user turn made unique, is
written as one JSONL file (20,000 conversations, ~115 MB by default). Each
contender runs in its own process, alternating A B A B over `--rounds`:

- seed: what the seed notebooks do: `json.loads` every line into a list,
  render every conversation in Gemma's chat template, then tokenize the
  list (token ids kept in memory, as `fit` on a list needs them);
- keras_ft cold: `data.cache_tokenized` with an empty cache: stream, tokenize
  each example as it is read straight to disk, split by index;
- keras_ft warm: the same call again (the second run of a training job):
  a cache hit that memory-maps the tokens.

Same tokenizer (the embedded Gemma 3 270M SentencePiece, without TensorFlow)
and template for all. Figures: wall time, peak RSS (ru_maxrss) above the
process's RSS before the data stage (high-water mark reset), examples out.

    python benchmarks/bench_data.py            # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

SHAREGPT = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "sharegpt-v3-subset"
    / "sharegpt_v3.subset2000.jsonl"
)
CONTENDERS = ("seed", "keras_ft_cold", "keras_ft_warm")


def write_large_file(path: Path, copies: int) -> int:
    """ShareGPT repeated `copies` times, every conversation unique; returns bytes."""
    lines = SHAREGPT.read_text(encoding="utf-8").rstrip("\n").split("\n")  # not splitlines: U+2028
    with path.open("w") as f:
        for copy in range(copies):
            for line in lines:
                record = json.loads(line)
                turns = record["conversations"]
                if turns:
                    turns[0]["value"] = f"[{copy}] {turns[0]['value']}"
                f.write(json.dumps(record) + "\n")
    return path.stat().st_size


def worker(contender: str, data_path: str, cache_dir: str, sequence_length: int) -> None:
    from keras_ft.config import Config
    from keras_ft.templates import get_template

    tokenizer = common.spm_tokenizer(common.embedded_preset())
    template = get_template("gemma")
    rss_before = common.rss_mb()
    common.reset_peak_rss()
    start = time.perf_counter()
    if contender == "seed":
        from keras_ft.data.records import LoadReport, iter_examples
        from keras_ft.data.tokenizer import tokenize_example

        with open(data_path) as f:
            records = [(f"{data_path}:{i}", json.loads(line)) for i, line in enumerate(f, 1)]
        examples = list(iter_examples(records, LoadReport(), skip_bad_records=True))
        tokenized = [tokenize_example(e, template, tokenizer, sequence_length) for e in examples]
        count = sum(t is not None for t in tokenized)
        cache_hit = False
    else:
        from keras_ft.data.token_cache import cache_tokenized

        cfg = Config(
            data=(data_path,),
            template="gemma",
            sequence_length=sequence_length,
            skip_bad_records=True,
            tokenized_cache_dir=cache_dir,
        )
        train, validation, report = cache_tokenized(cfg, template, tokenizer)
        count = len(train) + len(validation)
        cache_hit = report["cache"]["hit"]
        if cache_hit != (contender == "keras_ft_warm"):
            raise RuntimeError(f"{contender}: cache hit = {cache_hit}")
    seconds = time.perf_counter() - start
    common.emit(
        {
            "contender": contender,
            "seconds": seconds,
            "examples": count,
            "rss_before_mb": rss_before,
            "peak_above_mb": common.rss_mb("VmHWM") - rss_before,
            "cache_hit": cache_hit,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=CONTENDERS)
    parser.add_argument("--data")
    parser.add_argument("--cache-dir")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sequence-length", type=int, default=256)
    parser.add_argument("--no-append", action="store_true", help="print, skip RESULTS.md")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.data, args.cache_dir, args.sequence_length)
        return
    results: dict[str, list[dict]] = {c: [] for c in CONTENDERS}
    with tempfile.TemporaryDirectory() as tmp:
        data_path = Path(tmp) / "sharegpt_large.jsonl"
        size_mb = write_large_file(data_path, args.copies) / 1e6
        for round_ in range(args.rounds):
            cache_dir = Path(tmp) / f"cache{round_}"  # empty: the cold run tokenizes
            for contender in CONTENDERS:
                results[contender].append(
                    common.run_worker(
                        [
                            __file__,
                            "--worker",
                            contender,
                            "--data",
                            str(data_path),
                            "--cache-dir",
                            str(cache_dir),
                            "--sequence-length",
                            str(args.sequence_length),
                        ]
                    )
                )
    med = {
        c: {k: common.median([r[k] for r in rs]) for k in ("seconds", "peak_above_mb")}
        for c, rs in results.items()
    }
    names = {
        "seed": "seed: list of records -> list of tokens (in memory)",
        "keras_ft_cold": "keras_ft, first run: stream -> token cache on disk",
        "keras_ft_warm": "keras_ft, second run: token cache hit (memory-mapped)",
    }
    rows = [
        [
            names[c],
            results[c][0]["examples"],
            med[c]["seconds"],
            f"{med[c]['seconds'] / med['seed']['seconds']:.3g}x",
            med[c]["peak_above_mb"],
            f"{med[c]['peak_above_mb'] / med['seed']['peak_above_mb']:.3g}x",
        ]
        for c in CONTENDERS
    ]
    table = common.md_table(
        ["contender", "examples", "wall s", "vs seed", "peak RSS above start MB", "vs seed"], rows
    )
    notes = (
        f"- data: {data_path.name}, {size_mb:.0f} MB: the ShareGPT subset x "
        f"{args.copies} ({args.copies * 2000} conversations, each copy's first turn "
        f"made unique), Gemma chat template, {args.sequence_length} tokens, the "
        "embedded Gemma 3 270M SentencePiece; medians of "
        f"{args.rounds} alternating rounds.\n"
        "- peak RSS above start: the resident high-water mark (VmHWM, reset just "
        "before) minus the RSS before the data stage (Python, NumPy and the "
        "tokenizer loaded), so it is what the data costs. keras_ft counts fewer "
        "examples: training ones equal to a validation one are removed."
    )
    common.publish(
        "Data: streaming token cache vs in-memory lists (ShareGPT x copies)",
        f"python benchmarks/bench_data.py --copies {args.copies} --rounds {args.rounds}",
        table + "\n\n" + notes,
        results,
        append=not args.no_append,
    )


if __name__ == "__main__":
    main()
