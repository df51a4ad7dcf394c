import os

os.environ.setdefault("KERAS_BACKEND", "jax")
# keras_ft's compile cache (~/.cache/keras_ft/jax_compile_cache) stays out of
# the suite (tests/test_compile_cache.py turns it on for its own runs). Each
# pytest worker has JAX's own persistent cache in a fresh directory instead,
# inherited by the CLI subprocesses it starts: a program the tiny presets
# compile again in a later test (same shapes and settings) is loaded, not
# compiled; a cached executable is the program compiled (test_compile_cache
# checks runs bit-equal), so no result changes. One directory per worker,
# as JAX writes cache entries without a lock.
os.environ["KERAS_FT_COMPILE_CACHE"] = "0"
# (xdist's workers inherit the controller's environment: the marker tells
# a worker the directory there is the controller's, not one the user chose.)
if "JAX_COMPILATION_CACHE_DIR" not in os.environ or os.environ.get("KERAS_FT_TESTS_JAX_CACHE"):
    import atexit
    import shutil
    import tempfile

    _worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    _jax_cache = tempfile.mkdtemp(prefix=f"keras_ft_tests_jax_cache_{_worker}_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _jax_cache
    os.environ["KERAS_FT_TESTS_JAX_CACHE"] = "1"
    atexit.register(shutil.rmtree, _jax_cache, ignore_errors=True)
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
