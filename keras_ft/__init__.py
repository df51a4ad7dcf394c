"""keras_ft: LoRA fine-tuning of open LLMs with Keras 3 and keras-hub on JAX.

from keras_ft import Config, finetune
result = finetune(Config(preset="gemma_2b_en", data=("my_data.jsonl",)))
"""

import os
import sys

# JAX unless the user chose another backend; must precede the first keras import.
os.environ.setdefault("KERAS_BACKEND", "jax")


def _require_jax_backend() -> None:
    """keras_ft is JAX code (the chunked loss, the decode loop, evaluation):
    refuse another Keras backend at import, not with a traceback mid-run."""
    chosen = os.environ["KERAS_BACKEND"]
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "config"):
        chosen = keras.config.backend()  # keras was imported first: its choice holds
    if chosen != "jax":
        raise ImportError(
            f"keras_ft needs the JAX backend of Keras, but Keras uses {chosen!r}. "
            "Set KERAS_BACKEND=jax (or unset it) before Keras is imported, e.g. "
            "restart the notebook kernel and import keras_ft first. "
            f"Received: KERAS_BACKEND={os.environ['KERAS_BACKEND']!r}"
        )


_require_jax_backend()
from keras_ft.native_logs import QuietTensorFlowImport  # noqa: E402

# TensorFlow (keras-hub's tokenizers, TensorBoard files) logs INFO lines a user
# cannot act on; warnings and errors still show. The user's value wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

if "tensorflow" not in sys.modules and not any(
    isinstance(f, QuietTensorFlowImport) for f in sys.meta_path
):
    sys.meta_path.insert(0, QuietTensorFlowImport())

from keras_ft.config import Config, load_config  # noqa: E402

__all__ = ["Config", "load_config", "finetune", "Result"]


def __getattr__(name):
    # Lazy: `import keras_ft` (and `--help`) stays fast; keras loads on use.
    if name in ("finetune", "Result"):
        from keras_ft import pipeline  # heavy: keras, keras_hub, jax (pipeline loads them)

        return getattr(pipeline, name)
    raise AttributeError(f"module 'keras_ft' has no attribute {name!r}")
