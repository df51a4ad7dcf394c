"""One tiny chat model for the serving tests: a Gemma preset that records a
context length (so a long conversation is refused), and a LoRA adapter saved
with the `gemma` template, which every chat must then render with."""

import numpy as np
import pytest

CONTEXT_LENGTH = 160


@pytest.fixture(scope="session")
def chat_preset(tmp_path_factory):
    from keras_ft.testing import make_tiny_preset

    return make_tiny_preset(
        tmp_path_factory.mktemp("chat_preset"), "gemma", context_length=CONTEXT_LENGTH
    )


@pytest.fixture(scope="session")
def adapter_run(chat_preset, tmp_path_factory):
    """A directory holding an adapter trained (here: set) with the gemma template."""
    from keras_ft.config import Config
    from keras_ft.model.causal_lm import build_model
    from keras_ft.model.lora import save_adapter

    cfg = Config(preset=str(chat_preset), lora_rank=2, template="gemma", sequence_length=64)
    tuned = build_model(cfg)
    rng = np.random.default_rng(3)
    for weight in tuned.backbone.trainable_weights:  # LoRA B is 0 at start: no change
        weight.assign(rng.normal(0, 0.5, weight.shape))
    directory = tmp_path_factory.mktemp("adapter_run")
    save_adapter(tuned, directory, cfg)
    return directory


@pytest.fixture(scope="session")
def chat_model(adapter_run):
    """The adapter's chat as `keras-ft chat --adapter RUN` loads it (greedy, 6 tokens)."""
    from keras_ft.serving.session import chat_config, load_chat

    cfg = chat_config(str(adapter_run), None, {"sampler": "greedy", "max_new_tokens": 6})
    return load_chat(cfg, str(adapter_run))
