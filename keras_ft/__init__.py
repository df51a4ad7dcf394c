"""keras_ft: LoRA fine-tuning of open LLMs with Keras 3 and keras-hub on JAX.

    from keras_ft import Config, finetune
    result = finetune(Config(preset="gemma_2b_en", data=("my_data.jsonl",)))
"""

import os

# JAX unless the user chose another backend; must precede the first keras import.
os.environ.setdefault("KERAS_BACKEND", "jax")

from keras_ft.config import Config, load_config  # noqa: E402

__all__ = ["Config", "load_config", "finetune", "Result"]


def __getattr__(name):
    # Lazy: `import keras_ft` (and `--help`) stays fast; keras loads on use.
    if name in ("finetune", "Result"):
        from keras_ft import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'keras_ft' has no attribute {name!r}")
