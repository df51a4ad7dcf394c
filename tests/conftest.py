import os

os.environ.setdefault("KERAS_BACKEND", "jax")
# No persistent compile cache in the suite (tests/test_compile_cache.py turns
# it on for its own runs): every test compiles what it runs, as on a new machine.
os.environ["KERAS_FT_COMPILE_CACHE"] = "0"
# keras-hub with TensorFlow in the suite's processes: several tests compare with
# keras-hub's own `generate`, whose Gemma 3 preprocessing is TensorFlow code.
# tests/test_no_tensorflow.py runs keras_ft without it, in subprocesses.
os.environ["KERAS_FT_IMPORT_TENSORFLOW"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _tiny(tmp_path_factory, architecture):
    from keras_ft.testing import make_tiny_preset

    return make_tiny_preset(tmp_path_factory.mktemp(f"tiny_{architecture}"), architecture)


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory):
    return _tiny(tmp_path_factory, "gemma")


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory):
    return _tiny(tmp_path_factory, "gemma3")


@pytest.fixture(scope="session")
def tiny_llama3(tmp_path_factory):
    return _tiny(tmp_path_factory, "llama3")


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.fail(f"The shared datasets are missing: expected {SHARED_DATA}")
    return SHARED_DATA
