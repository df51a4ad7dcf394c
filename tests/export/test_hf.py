"""`keras-ft export hf`: transformers safetensors through keras-hub's exporter,
reloaded with transformers (torch, CPU) and compared with the tuned model."""

import json

import numpy as np
import pytest
import transformers
from click.testing import CliRunner
from export_helpers import TORCH_ATOL, load_hf, torch_logits

from keras_ft.cli import export
from keras_ft.export.card import CARD_FILE, TEMPLATE_FILE
from keras_ft.export.hf import check_supported, supported_backbones
from keras_ft.templates import Message, get_template
from keras_ft.testing import make_tiny_absolute_position_backbone


def test_transformers_loads_the_tuned_model_with_its_chat_template(tuned, tmp_path):
    assert tuned.changes() > 1e-2  # the adapter changes the logits
    out = tmp_path / "hf"
    result = CliRunner().invoke(export.main, ["hf", "--adapter", str(tuned.adapter), str(out)])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(torch_logits(load_hf(out)), tuned.logits, atol=TORCH_ATOL)

    template = get_template(tuned.template)
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == template.chat_template()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    chat = [Message("user", "How do I boil an egg?"), Message("assistant", "1. Boil water.")]
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in chat], tokenize=False
    )
    assert rendered == "".join(s.text for s in template.render(chat))
    generation = json.loads((out / "generation_config.json").read_text())
    stops = [tokenizer.convert_tokens_to_ids(t) for t in template.stop_tokens]
    assert generation["eos_token_id"] == stops
    assert json.loads((out / TEMPLATE_FILE).read_text())["template"] == tuned.template
    assert "## How to load it" in (out / CARD_FILE).read_text()


def test_an_architecture_keras_hub_cannot_export_is_refused_by_name():
    causal_lm = type("OPTCausalLM", (), {})()
    causal_lm.backbone = make_tiny_absolute_position_backbone("opt")
    with pytest.raises(
        ValueError, match=r"cannot export a OPTBackbone .*supports \[.*'GemmaBackbone'"
    ):
        check_supported(causal_lm)
    assert {"GemmaBackbone", "Gemma3Backbone", "Llama3Backbone"} <= set(supported_backbones())


def test_a_gemma3_without_post_norms_is_refused_not_exported_wrong(tiny_gemma3, tmp_path):
    # keras-hub's exporter drops the setting; transformers' Gemma 3 always has
    # the norms, and would load other logits.
    out = tmp_path / "hf"
    result = CliRunner().invoke(export.main, ["hf", "--preset", str(tiny_gemma3), str(out)])
    assert result.exit_code == 1
    assert "needs use_post_attention_norm=True" in result.output
    assert "\n" not in result.output.strip()  # one line
    assert not out.exists()
