"""Writes data/how_to_steps.jsonl: original step-by-step how-to answers.

Every answer is a numbered list with no preamble. Part of the pairs is
written out by hand; the rest comes from small tables (grains, vegetables,
seeds, unit conversions, bills...) whose rows carry the specific numbers, so
templated answers still differ in substance. Deterministic: rerun with
`python data/make_how_to_steps.py` to regenerate the same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from how_to_tables import TABLE_PAIRS
from how_to_written import WRITTEN

OUT = Path(__file__).with_name("how_to_steps.jsonl")
MAX_WORDS = 78  # prompt + answer; measured at most ~120 Gemma 3 tokens


def numbered(steps: list[str]) -> str:
    return "\n".join(f"{i}. {step}" for i, step in enumerate(steps, 1))


def main() -> None:
    pairs = [(q, numbered(s)) for q, s in WRITTEN] + [(q, numbered(s)) for q, s in TABLE_PAIRS]
    questions = [q for q, _ in pairs]
    duplicates = {q for q in questions if questions.count(q) > 1}
    if duplicates:
        raise SystemExit(f"duplicate questions: {sorted(duplicates)}")
    for question, answer in pairs:
        words = len(question.split()) + len(answer.split())
        if words > MAX_WORDS or not question.endswith("?"):
            raise SystemExit(f"too long ({words} words) or no '?': {question}")
    random.Random(0).shuffle(pairs)  # mix topics, so the first N cover many
    with OUT.open("w", encoding="utf-8") as f:
        for question, answer in pairs:
            f.write(
                json.dumps({"prompt": question, "completion": answer}, ensure_ascii=False) + "\n"
            )
    print(f"wrote {len(pairs)} pairs to {OUT}")


if __name__ == "__main__":
    main()
