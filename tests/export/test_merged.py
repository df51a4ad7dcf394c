"""`keras-ft export preset`: LoRA merged into a keras-hub preset that plain
keras-hub loads, checked in a subprocess that never imports keras_ft."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from export_helpers import TOKEN_IDS, keras_logits

from keras_ft.cli import export
from keras_ft.export.card import CARD_FILE, TEMPLATE_FILE
from keras_ft.export.merged import export_preset_merged, merge_lora
from keras_ft.model.causal_lm import load_causal_lm
from keras_ft.templates import get_template

# Loads the preset with keras-hub alone and prints its logits; fails if
# keras_ft was imported on the way (the preset must not need it).
PLAIN_KERAS_HUB = """
import json, os, sys
os.environ["KERAS_BACKEND"] = "jax"
import numpy as np
import keras_hub
causal_lm = keras_hub.models.CausalLM.from_preset(sys.argv[1])
ids = np.array(json.loads(sys.argv[2]), np.int32)
logits = causal_lm({"token_ids": ids, "padding_mask": np.ones_like(ids, bool)})
assert not any(m == "keras_ft" or m.startswith("keras_ft.") for m in sys.modules), "keras_ft"
np.save(sys.argv[3], np.asarray(logits, np.float32))
"""


def plain_keras_hub_logits(preset_dir, tmp_path) -> np.ndarray:
    out = tmp_path / "logits.npy"
    subprocess.run(
        [sys.executable, "-c", PLAIN_KERAS_HUB, str(preset_dir), json.dumps(TOKEN_IDS.tolist()),
         str(out)],
        check=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    return np.load(out)


def test_the_merged_preset_loads_in_plain_keras_hub_with_the_tuned_logits(tuned_gemma, tmp_path):
    assert tuned_gemma.changes() > 1e-2  # the adapter changes the logits
    out = tmp_path / "merged"
    result = CliRunner().invoke(
        export.main, ["preset", "--adapter", str(tuned_gemma.adapter), str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    # float32 merge: W + 4 * A @ B once instead of x@W + 4 * (x@A)@B per call;
    # the sums differ only in rounding (measured ~1e-6 on logits of size ~1).
    np.testing.assert_allclose(
        plain_keras_hub_logits(out, tmp_path), tuned_gemma.logits, rtol=1e-5, atol=1e-5
    )
    record = json.loads((out / TEMPLATE_FILE).read_text())
    assert record["template"] == "gemma"
    assert record["chat_template"] == get_template("gemma").chat_template()
    assert record["stop_tokens"] == ["<end_of_turn>", "<eos>"]
    assert (out / "assets" / "tokenizer" / "vocabulary.spm").exists()  # the tokenizer travels
    text = (out / CARD_FILE).read_text()
    assert "Gemma Terms of Use" in text and "`gemma`" in text


@pytest.mark.parametrize("architecture", ["gemma3", "llama3"])
def test_every_architecture_merges_to_the_tuned_logits(architecture, request, tmp_path):
    tuned = request.getfixturevalue(f"tuned_{architecture}")
    assert tuned.changes() > 1e-2
    out = export_preset_merged(None, tmp_path / "merged", adapter=tuned.adapter)
    reloaded = load_causal_lm(str(out))  # a fresh load: no LoRA layers
    assert not [w for w in reloaded.backbone.weights if "lora" in w.path]
    np.testing.assert_allclose(keras_logits(reloaded), tuned.logits, rtol=1e-5, atol=1e-5)


def test_a_failed_export_leaves_the_old_one(tuned_gemma, tmp_path):
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep").write_text("old")
    result = CliRunner().invoke(
        export.main, ["preset", "--preset", str(tmp_path / "nothing"), str(out)]
    )
    assert result.exit_code != 0
    assert (out / "keep").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no temp dir left


def test_merging_refuses_a_quantized_lora_layer(tuned_gemma):
    causal_lm = load_causal_lm(str(tuned_gemma.preset))
    causal_lm.backbone.quantize("int8")
    causal_lm.backbone.enable_lora(2)
    with pytest.raises(ValueError, match="quantized .int8.; LoRA can only be merged"):
        merge_lora(causal_lm.backbone)


def test_a_bad_adapter_is_a_one_line_error(tuned_gemma, tiny_llama3, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(export.main, ["hf", "--adapter", str(tmp_path), str(out)])
    assert result.exit_code == 2 and "No adapter at" in result.output
    result = CliRunner().invoke(
        export.main,
        ["preset", "--preset", str(tiny_llama3), "--adapter", str(tuned_gemma.adapter), str(out)],
    )
    assert result.exit_code == 1 and "was trained on GemmaBackbone" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()
