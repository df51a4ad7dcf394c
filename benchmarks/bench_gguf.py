"""GGUF import/export of the embedded Gemma 3 270M: time, memory, fidelity.

Rows:
* convert: shipped Q4_K_M GGUF -> keras-hub preset (wall time, peak RSS; the
  issue asks for < 8 GB).
* export DTYPE: keras preset -> GGUF (time, size), then GGUF -> keras again:
  max |delta logit| and top-1 agreement against the original keras model on
  the GPL-3 preamble (660 tokens); and, where llama-cpp-python is installed,
  how many of llama.cpp's greedy tokens on the exported file equal the
  recorded f32 reference (`tests/fixtures/llamacpp_reference.json`, which
  keras matches 16/16); and how many of a few chats llama.cpp renders from
  the exported `tokenizer.chat_template` (llama-cpp-python's Jinja renderer,
  the one `Llama.create_chat_completion` uses, then llama.cpp's own
  tokenizer with specials parsed) token for token as keras_ft renders them
  for training (whole chat) and generation (prompt), with `--template`.

Each row runs in its own process (common.run_worker), so peak RSS is its own.

    KERAS_BACKEND=jax python benchmarks/bench_gguf.py [--dtypes f32 f16 bf16 q8_0]
        [--template instruction|gemma|llama3|"..{prompt}..{response}"]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

FIXTURES = common.REPO / "tests" / "fixtures"


def convert_worker() -> None:
    from keras_ft.gguf.convert import convert_gguf

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        convert_gguf(common.gguf_path(), Path(tmp) / "preset")
        wall = time.perf_counter() - start
    common.emit({"wall_s": wall, "peak_rss_mb": common.peak_rss_mb()})


CHATS = [
    [
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": "1. Fill a pot with water.\n2. Boil it."},
    ],
    [
        {"role": "system", "content": "Answer in one line."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy? "},
        {"role": "assistant", "content": " Rome, since 1871."},
    ],
]


def export_worker(dtype: str, template: str) -> None:
    import jax
    import keras_hub
    import numpy as np

    from keras_ft.export.gguf import export_gguf
    from keras_ft.gguf.convert import convert_gguf

    def logits(causal_lm, ids):
        tv = [v.value for v in causal_lm.trainable_variables]
        ntv = [v.value for v in causal_lm.non_trainable_variables]
        inputs = {"token_ids": ids, "padding_mask": np.ones_like(ids)}
        forward = jax.jit(lambda tv, ntv, x: causal_lm.stateless_call(tv, ntv, x)[0])
        return np.asarray(forward(tv, ntv, inputs))[0]

    original = keras_hub.models.Gemma3CausalLM.from_preset(common.embedded_preset())
    text = (FIXTURES / "gpl3_preamble.txt").read_text()
    ids = np.asarray([[2, *np.asarray(original.preprocessor.tokenizer(text)).tolist()]], np.int32)
    expected = logits(original, ids)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"gemma3_270m_{dtype}.gguf"
        start = time.perf_counter()
        export_gguf(original, path, dtype=dtype, template=template)
        result["export_s"] = time.perf_counter() - start
        result["size_mb"] = path.stat().st_size / 1e6
        result["llamacpp_chat_match"] = _llamacpp_chat(
            path, template, original.preprocessor.tokenizer
        )
        del original
        start = time.perf_counter()
        convert_gguf(path, Path(tmp) / "back")
        result["reconvert_s"] = time.perf_counter() - start
        back = keras_hub.models.Gemma3CausalLM.from_preset(str(Path(tmp) / "back"))
        actual = logits(back, ids)
        result["max_abs_dlogit"] = float(np.abs(actual - expected).max())
        result["top1_agreement"] = float((actual.argmax(-1) == expected.argmax(-1)).mean())
        result["llamacpp_greedy_match"] = _llamacpp_greedy(path)
    result["peak_rss_mb"] = common.peak_rss_mb()
    common.emit(result)


def _llamacpp_greedy(path: Path) -> str:
    try:
        import llama_cpp
    except ImportError:
        return "n/a (no llama_cpp)"
    reference = json.loads((FIXTURES / "llamacpp_reference.json").read_text())
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=2, verbose=False)
    matched = total = 0
    for case in reference["greedy"]:
        new = []
        for token in llm.generate(case["prompt_ids"], top_k=1, temp=0.0, reset=True):
            new.append(int(token))
            if len(new) == len(case["f32"]):
                break
        matched += sum(a == b for a, b in zip(new, case["f32"]))
        total += len(case["f32"])
    return f"{matched}/{total}"


def _llamacpp_chat(path: Path, template_name: str, keras_tokenizer) -> str:
    """Chats (and their generation prompts) llama.cpp renders from the GGUF's
    chat template with the same token ids as keras_ft, out of all."""
    try:
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    except ImportError:
        return "n/a (no llama_cpp)"
    from keras_ft.data.tokenizer import TextTokenizer, prompt_token_ids, tokenize_example
    from keras_ft.templates import Example, Message, get_template

    template, tokenizer = get_template(template_name), TextTokenizer(keras_tokenizer)
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    source = llm.metadata["tokenizer.chat_template"]

    def token(token_id):
        return llm.detokenize([token_id], special=True).decode("utf-8")

    def llamacpp_ids(messages, add_generation_prompt):
        formatter = Jinja2ChatFormatter(
            source,
            eos_token=token(llm.token_eos()),
            bos_token=token(llm.token_bos()),
            add_generation_prompt=add_generation_prompt,
        )
        rendered = formatter(messages=messages).prompt
        return llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)

    matched = 0
    for chat in CHATS:
        messages = tuple(Message(m["role"], m["content"]) for m in chat)
        trained = tokenize_example(Example(messages), template, tokenizer, 100_000)
        matched += llamacpp_ids(chat, False) == trained.token_ids.tolist()
        matched += llamacpp_ids(chat[:-1], True) == prompt_token_ids(
            messages[:-1], template, tokenizer
        )
    return f"{matched}/{2 * len(CHATS)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["f32", "f16", "bf16", "q8_0"])
    parser.add_argument(
        "--template", default="gemma", help="keras_ft template written as the GGUF chat template"
    )
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker[0] == "convert":
            convert_worker()
        else:
            export_worker(args.worker[1], args.worker[2])
        return
    common.embedded_preset()  # convert once, outside the timed rows
    script = str(Path(__file__).relative_to(common.REPO))
    convert = common.run_worker([script, "--worker", "convert"])
    rows = [
        [
            "convert Q4_K_M -> keras",
            f"{convert['wall_s']:.0f} s",
            "",
            "",
            "",
            "",
            "",
            "",
            f"{convert['peak_rss_mb'] / 1024:.2f}",
        ]
    ]
    for dtype in args.dtypes:
        r = common.run_worker([script, "--worker", "export", dtype, args.template])
        rows.append(
            [
                f"export {dtype} -> reconvert",
                f"{r['export_s']:.0f} s",
                f"{r['reconvert_s']:.0f} s",
                f"{r['size_mb']:.0f}",
                f"{r['max_abs_dlogit']:.3g}",
                f"{r['top1_agreement']:.4f}",
                r["llamacpp_greedy_match"],
                r["llamacpp_chat_match"],
                f"{r['peak_rss_mb'] / 1024:.2f}",
            ]
        )
    headers = [
        "row",
        "time",
        "reconvert",
        "file MB",
        "max |dlogit|",
        "top-1 agree",
        "llama.cpp greedy = ref",
        f"llama.cpp chat ({args.template}) = keras_ft",
        "peak RSS GB",
    ]
    body = common.md_table(headers, rows) + (
        "\n\nmax |dlogit| and top-1 agreement: reconverted vs original keras model on the "
        "660-token GPL-3 preamble. Peak RSS of the export rows includes two models "
        "(original + reconverted) and the exporter's copy of the weights."
    )
    common.append_results(
        "GGUF convert/export (bench_gguf.py)",
        " ".join(["KERAS_BACKEND=jax python benchmarks/bench_gguf.py", *sys.argv[1:]]),
        body,
    )
    print(body)


if __name__ == "__main__":
    main()
