"""Greedy generation speed: keras_ft vs keras-hub `generate` vs llama.cpp.

Same weights: the embedded Gemma 3 270M (keras, f32), the same weights
exported by `keras_ft.gguf_export` as f32 and f16 GGUF for llama.cpp, and the
shipped Q4_K_M GGUF (a different, quantized model: labelled as such). Same
prompt (the Instruction/Response template, token ids from keras_ft's
tokenizer), 64 new tokens, greedy, batch 1, each contender in its own
process, alternating rounds; medians.

    python benchmarks/bench_generate.py          # ~10 min on 2 quiet Zen 3 cores

- new tok/s: 64 new tokens / the time from prompt to the 64th token.
- TTFT: time to the first new token. keras-hub's compiled loop does not
  stream, so for the keras contenders it is a whole call made for 1 token.
- decode tok/s: 63 / (time to 64 tokens - TTFT).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

PROMPT = "Write a long story about a robot who learns to paint, with many details."
NEW_TOKENS = 64
CONTENDERS = {
    "keras_ft": "keras_ft `generate` (f32, its loop over keras-hub's cached forward pass)",
    "keras_ft_bf16": "keras_ft `generate`, bf16 weights (`from_preset(dtype='bfloat16')`)",
    "keras_ft_int8": "keras_ft `generate`, int8 (Keras `CausalLM.quantize('int8')`)",
    "keras_hub": "keras-hub `CausalLM.generate` on a string (f32)",
    "llama_f32": "llama.cpp, f32 GGUF exported from the same weights",
    "llama_f16": "llama.cpp, f16 GGUF exported from the same weights",
    "llama_q8_0": "llama.cpp, q8_0 GGUF exported from the same weights",
    "llama_q4": "llama.cpp, shipped Q4_K_M GGUF (quantized: not the same weights)",
}


def prompt_ids(preset: str) -> list[int]:
    from keras_ft.data.tokenizer import TextTokenizer
    from keras_ft.generation.generate import encode_prompt
    from keras_ft.templates import get_template

    return encode_prompt(PROMPT, get_template("instruction"), TextTokenizer.from_preset(preset))


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def worker_keras_ft(preset: str, repeats: int, dtype: str = "float32") -> dict:
    """keras_ft's decode loop; `dtype` "bfloat16" loads bf16 weights, "int8"
    quantizes the float32 model with Keras (`CausalLM.quantize`, load time)."""
    import keras_hub

    from keras_ft.config import Config
    from keras_ft.data.tokenizer import TextTokenizer
    from keras_ft.generation.generate import generate

    start = time.perf_counter()
    causal_lm = keras_hub.models.CausalLM.from_preset(
        preset, dtype="bfloat16" if dtype == "bfloat16" else None
    )
    if dtype == "int8":  # the backbone: the tokenizer layer has nothing to quantize
        causal_lm.backbone.quantize("int8")
    tokenizer = TextTokenizer.from_preset(preset)
    load_s = time.perf_counter() - start
    cfg = {
        n: Config(preset=preset, template="instruction", sampler="greedy", max_new_tokens=n)
        for n in (1, NEW_TOKENS)
    }
    replies = {}

    def run(n):
        replies[n] = generate(causal_lm, [PROMPT], cfg[n], tokenizer)[0]

    first = timed(lambda: run(1), 1) + timed(lambda: run(NEW_TOKENS), 1)
    t1, t64 = [], []
    for _ in range(repeats):
        t1 += timed(lambda: run(1), 1)
        t64 += timed(lambda: run(NEW_TOKENS), 1)
    delivered = len(tokenizer.encode(replies[NEW_TOKENS]))
    out = finish(load_s, first, t1, t64, delivered, replies[NEW_TOKENS])
    out["ids"] = [int(i) for i in tokenizer.encode(replies[NEW_TOKENS])]
    return out


def worker_keras_hub(preset: str, repeats: int) -> dict:
    import keras_hub

    start = time.perf_counter()
    causal_lm = keras_hub.models.CausalLM.from_preset(preset)
    causal_lm.compile(sampler="greedy")
    load_s = time.perf_counter() - start
    text = f"Instruction:\n{PROMPT}\n\nResponse:\n"
    import numpy as np

    prompt_len = int(
        np.asarray(causal_lm.preprocessor.generate_preprocess([text])["padding_mask"]).sum()
    )
    out = {}

    def run(n):
        out[n] = causal_lm.generate(text, max_length=prompt_len + n, stop_token_ids=None)

    first = timed(lambda: run(1), 1) + timed(lambda: run(NEW_TOKENS), 1)
    t1, t64 = [], []
    for _ in range(repeats):
        t1 += timed(lambda: run(1), 1)
        t64 += timed(lambda: run(NEW_TOKENS), 1)
    reply = str(out[NEW_TOKENS])
    return finish(load_s, first, t1, t64, NEW_TOKENS, reply[len(text) :])


def worker_llama(path: str, ids: list[int], repeats: int) -> dict:
    import llama_cpp

    start = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=path, n_ctx=256, n_threads=os.cpu_count(), n_batch=256, verbose=False
    )
    load_s = time.perf_counter() - start

    def run():
        llm.reset()
        t0 = time.perf_counter()
        tokens, ttft = [], None
        for token in llm.generate(ids, top_k=1, top_p=1.0, temp=0.0, reset=True):
            if ttft is None:
                ttft = time.perf_counter() - t0
            tokens.append(token)
            if len(tokens) == NEW_TOKENS:
                break
        return ttft, time.perf_counter() - t0, tokens

    first = list(run()[:2])
    t1, t64, tokens = [], [], []
    for _ in range(repeats):
        ttft, total, tokens = run()
        t1.append(ttft)
        t64.append(total)
    text = llm.detokenize(tokens).decode("utf-8", "replace")
    return finish(load_s, first, t1, t64, len(tokens), text)


def finish(load_s, first, t1, t64, delivered, text) -> dict:
    return {
        "load_s": load_s,
        "first_calls_s": first,
        "ttft": t1,
        "total": t64,
        "delivered": delivered,
        "text": text[:200],
        "peak_rss_mb": common.peak_rss_mb(),
        "load_avg": os.getloadavg()[0],
    }


def gguf_files(preset: str) -> dict:
    """f32/f16 GGUF exports of the embedded preset (cached), and the shipped Q4_K_M."""
    files = {"llama_q4": common.gguf_path()}
    try:
        from keras_ft.export.gguf import export_gguf
    except ImportError:
        return files
    for dtype in ("f32", "f16", "q8_0"):
        path = common.PRESET_CACHE / f"gemma3_270m_{dtype}.gguf"
        if not path.exists():
            import keras_hub

            causal_lm = keras_hub.models.CausalLM.from_preset(preset)
            export_gguf(causal_lm, path, dtype=dtype)
        files[f"llama_{dtype}"] = str(path)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per process")
    parser.add_argument("--rounds", type=int, default=2, help="alternating process rounds")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--no-append", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    preset = common.embedded_preset()
    if args.worker:
        if args.worker == "keras_ft":
            return common.emit(worker_keras_ft(preset, args.repeats))
        if args.worker in ("keras_ft_bf16", "keras_ft_int8"):
            dtype = {"keras_ft_bf16": "bfloat16", "keras_ft_int8": "int8"}[args.worker]
            return common.emit(worker_keras_ft(preset, args.repeats, dtype))
        if args.worker == "keras_hub":
            return common.emit(worker_keras_hub(preset, args.repeats))
        return common.emit(worker_llama(args.path, prompt_ids(preset), args.repeats))
    command = "python benchmarks/bench_generate.py " + " ".join(sys.argv[1:])
    print(f"machine: {common.machine()}", flush=True)
    names = args.contenders.split(",")
    files = gguf_files(preset) if any(n.startswith("llama") for n in names) else {}
    names = [n for n in names if not n.startswith("llama") or n in files]
    runs = {n: [] for n in names}
    for round_ in range(args.rounds):
        for name in names:
            argv = [__file__, "--worker", name, "--repeats", str(args.repeats)]
            if name in files:
                argv += ["--path", files[name]]
            try:
                r = common.run_worker(argv)
            except RuntimeError as err:  # report the others; say which failed
                print(f"[{round_}] {name} FAILED: {err}", flush=True)
                continue
            runs[name].append(r)
            print(
                f"[{round_}] {name}: TTFT {common.median(r['ttft']):.3f} s, 64 tokens "
                f"{common.median(r['total']):.2f} s, delivered {r['delivered']}, "
                f"RSS {r['peak_rss_mb']:.0f} MB | {r['text'][:60]!r}",
                flush=True,
            )
    report(args, command, names, runs)


def equal_tokens(runs) -> list[str]:
    """Share of keras_ft's bf16/int8 greedy reply tokens equal to its float32
    reply's, position by position (until the shorter reply ends)."""
    lines = []
    if not runs.get("keras_ft"):
        return lines
    ref = runs["keras_ft"][-1]["ids"]
    for name in ("keras_ft_bf16", "keras_ft_int8"):
        if runs.get(name):
            ids = runs[name][-1]["ids"]
            same = sum(a == b for a, b in zip(ref, ids))
            prefix = next((i for i, (a, b) in enumerate(zip(ref, ids)) if a != b), len(ids))
            lines.append(
                f"- {name}: {same}/{max(len(ref), 1)} greedy tokens equal to float32's "
                f"({100 * same / max(len(ref), 1):.0f} %), first {prefix} identical."
            )
    return lines


def same_text(runs) -> list[str]:
    """A line saying whether keras_ft's greedy reply is keras-hub's (first 150 chars)."""
    if not runs.get("keras_ft") or not runs.get("keras_hub"):
        return equal_tokens(runs)
    ours, theirs = (runs[n][-1]["text"].strip()[:150] for n in ("keras_ft", "keras_hub"))
    return [
        f"- keras_ft's reply is keras-hub's (first 150 characters): {ours == theirs}.",
        *equal_tokens(runs),
    ]


def report(args, command, names, runs) -> None:
    med = common.median
    rows, speed = [], {}
    names = [n for n in names if runs[n]]
    for name in names:
        rs = runs[name]
        total = med([t for r in rs for t in r["total"]])
        ttft = med([t for r in rs for t in r["ttft"]])
        speed[name] = [NEW_TOKENS / med(r["total"]) for r in rs]
        rows.append(
            [
                CONTENDERS[name],
                NEW_TOKENS / total,
                ttft,
                (NEW_TOKENS - 1) / max(total - ttft, 1e-9),
                med([sum(r["first_calls_s"]) for r in rs]),
                med([r["load_s"] for r in rs]),
                med([r["peak_rss_mb"] for r in rs]),
                rs[-1]["delivered"],
            ]
        )
    table = common.md_table(
        [
            "contender",
            "new tok/s",
            "TTFT s",
            "decode tok/s",
            "first calls s (compile)",
            "load s",
            "peak RSS MB",
            "tokens delivered",
        ],
        rows,
    )
    ratios = []
    for ours in ("keras_ft", "keras_ft_bf16", "keras_ft_int8", "keras_hub"):
        for ref in ("llama_f32", "llama_f16", "llama_q8_0", "llama_q4"):
            if ours in speed and ref in speed:
                per = [a / b for a, b in zip(speed[ours], speed[ref])]
                ratios.append([f"{ours} / {ref}", med(per), " ".join(f"{p:.2f}" for p in per)])
    body = "\n".join(
        [
            table,
            "",
            common.md_table(["ratio (new tok/s)", "median", "per round"], ratios),
            "",
            f"- prompt: {PROMPT!r} in the Instruction/Response template; greedy; "
            f"{NEW_TOKENS} new tokens; batch 1; {args.rounds} alternating process rounds x "
            f"{args.repeats} timed calls; medians.",
            "- keras contenders do not stream: their TTFT is a whole `generate` call for 1 "
            "new token. keras_ft `generate` stops at `<eos>` or after exactly the new tokens "
            "asked for, in a buffer rounded up to a multiple of 16 (tokens delivered says how "
            "many it returned).",
            *same_text(runs),
            "- GPU: not measured; no GPU is lent to this task.",
        ]
    )
    print(body)
    if not args.no_append:
        common.append_results("Generation: greedy, Gemma 3 270M", command, body)


if __name__ == "__main__":
    main()
