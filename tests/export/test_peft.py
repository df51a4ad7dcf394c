"""`keras-ft export peft`: a PEFT adapter that `PeftModel.from_pretrained` applies
to the base's transformers export, giving the tuned model's logits."""

import json

import numpy as np
import peft
from click.testing import CliRunner
from export_helpers import TORCH_ATOL, load_hf, torch_logits

from keras_ft.cli import export
from keras_ft.export.peft import ADAPTER_WEIGHTS, PEFT_CONFIG


def test_peft_applies_the_adapter_to_the_exported_base(tuned, tmp_path):
    assert tuned.changes() > 1e-2  # the adapter changes the logits
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "peft"
    result = CliRunner().invoke(export.main, ["hf", "--preset", str(tuned.preset), str(base_dir)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        export.main, ["peft", "--adapter", str(tuned.adapter), str(adapter_dir)]
    )
    assert result.exit_code == 0, result.output
    assert (adapter_dir / ADAPTER_WEIGHTS).exists()

    base = load_hf(base_dir)
    np.testing.assert_allclose(torch_logits(base), tuned.base_logits, atol=TORCH_ATOL)
    model = peft.PeftModel.from_pretrained(base, str(adapter_dir))
    np.testing.assert_allclose(torch_logits(model), tuned.logits, atol=TORCH_ATOL)

    config = json.loads((adapter_dir / PEFT_CONFIG).read_text())
    assert set(config["target_modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip
    # The query's per-head factors (2 heads, rank 2) need rank 4 and alpha 16
    # to keep Keras' scale 8 / 2; the one key/value head keeps rank 2.
    assert config["rank_pattern"] == {"q_proj": 4} and config["alpha_pattern"] == {"q_proj": 16.0}
    assert (config["r"], config["lora_alpha"]) == (2, 8.0)


def test_peft_needs_an_adapter(tuned_gemma, tmp_path):
    result = CliRunner().invoke(
        export.main, ["peft", "--preset", str(tuned_gemma.preset), str(tmp_path / "peft")]
    )
    assert result.exit_code == 2 and "Missing option '--adapter'" in result.output
