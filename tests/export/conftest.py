"""The export tests' tuned adapters: one per architecture, made once
(`export_helpers.make_tuned`)."""

import pytest
from export_helpers import make_full_gemma3, make_tuned


@pytest.fixture(scope="session")
def tuned_gemma(tiny_gemma, tmp_path_factory):
    return make_tuned(tiny_gemma, tmp_path_factory.mktemp("adapter_gemma"), "gemma")


@pytest.fixture(scope="session")
def tuned_gemma3(tmp_path_factory):
    preset = make_full_gemma3(tmp_path_factory.mktemp("gemma3_post_norms") / "preset")
    return make_tuned(preset, tmp_path_factory.mktemp("adapter_gemma3"), "gemma3")


@pytest.fixture(scope="session")
def tuned_llama3(tiny_llama3, tmp_path_factory):
    return make_tuned(tiny_llama3, tmp_path_factory.mktemp("adapter_llama3"), "llama3")


@pytest.fixture(scope="session", params=["gemma", "gemma3", "llama3"])
def tuned(request):
    """Each architecture's tuned adapter in turn."""
    return request.getfixturevalue(f"tuned_{request.param}")
