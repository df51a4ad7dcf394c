"""experiments/kaggle/: each Kaggle TPU script loads and dry-runs (config,
mesh, memory plan) without a weight or a download."""

import configparser
import importlib.util
import re
from pathlib import Path

import keras_hub
import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = {
    "gemma_7b_en_tpu_v3_8_model_parallel.py": ("gemma_7b_en", (1, 8)),
    "gemma_2b_en_tpu_v3_8_data_parallel.py": ("gemma_2b_en", (8, 1)),
}


def load(name):
    spec = importlib.util.spec_from_file_location(name[:-3], REPO / "experiments/kaggle" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_script_is_checked():
    assert sorted(p.name for p in (REPO / "experiments/kaggle").glob("*.py")) == sorted(SCRIPTS)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_dry_runs_on_a_tpu_v3_8_without_loading_weights(name, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not load or download anything")

    for cls in (
        keras_hub.models.CausalLM,
        keras_hub.models.Backbone,
        keras_hub.tokenizers.Tokenizer,
    ):
        monkeypatch.setattr(cls, "from_preset", refuse)
    preset, mesh = SCRIPTS[name]
    script = load(name)
    # the exact Kaggle handle keras-hub downloads for that preset name
    assert (
        script.KAGGLE_HANDLE
        == keras_hub.models.GemmaBackbone.presets[preset]["kaggle_handle"]
        == script.CONFIG.preset
    )
    plan = script.dry_run()
    assert plan.mesh == mesh, plan.reason
    assert plan.verdict.device.name == "TPU v3-8" and plan.verdict.fits, str(plan.verdict)
    assert plan.config["class_name"] == "GemmaBackbone"
    assert f"Mesh {mesh[0]}x{mesh[1]}" in str(plan)


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_install_cell_pins_what_setup_cfg_pins(name):
    text = (REPO / "experiments/kaggle" / name).read_text()
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    requires = setup["options"]["install_requires"]
    for package in ("keras", "keras-hub", "jax", "kagglehub"):
        pinned = re.search(rf"^\s*{re.escape(package)}(>=[^\s#]+)", requires, re.M).group(1)
        assert re.search(rf'"{re.escape(package)}(\[tpu\])?{re.escape(pinned)}"', text), (
            f"{name}: the install cell must pin {package}{pinned} as setup.cfg does"
        )
