"""The private keras / keras-hub APIs keras_ft relies on still exist.

When an upgrade removes one, this fails naming it, where keras_ft uses it
and the installed versions (keras_ft/private_api.py lists them all).
"""

import re
from pathlib import Path

import pytest

from keras_ft import private_api
from keras_ft.private_api import PRIVATE_APIS, PrivateAPI, check

PACKAGE = Path(private_api.__file__).parent


def test_every_private_api_keras_ft_uses_is_present():
    check()  # raises, naming what is missing, on an upgrade that removed one


def test_a_missing_api_is_named_with_where_it_is_used_and_the_versions():
    gone = PrivateAPI(
        "keras_hub.models.Gemma3CausalLM._no_such_method",
        "decode.GenerateLoop",
        "a stand-in for a removed method",
    )
    gone_module = PrivateAPI(
        "keras_hub.src.no_such_module.thing", "model.load_backbone", "a stand-in for a moved module"
    )
    changed = PrivateAPI("an instance attribute", "model.enable_lora", "probe", lambda: False)
    with pytest.raises(RuntimeError) as error:
        check([*PRIVATE_APIS, gone, gone_module, changed])
    message = str(error.value)
    assert "relies on 3 private API(s)" in message
    assert (
        "keras_hub.models.Gemma3CausalLM._no_such_method (used in decode.GenerateLoop" in message
        and "AttributeError" in message
    )
    assert "keras_hub.src.no_such_module.thing (used in model.load_backbone" in message
    assert "an instance attribute (used in model.enable_lora" in message
    from importlib import metadata

    for package in ("keras", "keras-hub"):
        assert f"{package} {metadata.version(package)}" in message


def test_the_probes_leave_no_deferred_variable_behind():
    from keras.src.backend.common import global_state

    before = list(global_state.get_global_attribute("uninitialized_variables", []) or [])
    assert private_api._deferred_variables_registry()
    after = global_state.get_global_attribute("uninitialized_variables", []) or []
    assert [id(v) for v in after] == [id(v) for v in before]


def test_every_src_import_in_keras_ft_is_listed():
    # `from keras(_hub).src.x import y` anywhere in keras_ft needs an entry x.y.
    listed = " ".join(api.name for api in PRIVATE_APIS)
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "private_api.py":
            continue
        for module, names in re.findall(
            r"from (keras(?:_hub)?\.src[\w.]*) import ([\w, ]+)", path.read_text()
        ):
            for name in (n.strip() for n in names.split(",")):
                assert f"{module}.{name}" in listed, (
                    f"{path.name}: {module}.{name} is not in PRIVATE_APIS"
                )


def test_setup_cfg_pins_the_versions_these_apis_were_checked_on():
    # Private APIs may go in any release: each library they come from has an
    # upper bound, and the installed (tested) version lies inside the range.
    import configparser
    from importlib import metadata

    from packaging.requirements import Requirement

    parser = configparser.ConfigParser()
    parser.read(PACKAGE.parent / "setup.cfg")
    lines = [
        line.split("#")[0].strip() for line in parser["options"]["install_requires"].splitlines()
    ]
    requirements = {r.name: r for r in map(Requirement, filter(None, lines))}
    for name in ("keras", "keras-hub", "jax", "jaxlib", "kagglehub"):
        specifier = requirements[name].specifier
        assert any(s.operator == "<" for s in specifier), f"{name} has no upper bound"
        installed = metadata.version(name)
        assert specifier.contains(installed), f"{name} {installed} is outside {specifier}"


USED_IN_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")


def used_in_names(api: PrivateAPI) -> list[str]:
    """The dotted names in `api.used_in` (its words in parentheses are notes)."""
    return USED_IN_NAME.findall(api.used_in)


def test_every_used_in_names_an_existing_function_under_keras_ft():
    # `wing.module.function` (or `.Class.method`): a rename or a move that
    # forgets this catalogue fails here, naming the stale entry.
    stale = []
    for api in PRIVATE_APIS:
        names = used_in_names(api)
        assert names, f"{api.name}: used_in {api.used_in!r} names no keras_ft function"
        for name in names:
            try:
                private_api.resolve(f"keras_ft.{name}")
            except (ImportError, AttributeError) as e:
                stale.append(f"{api.name}: used_in {name} ({type(e).__name__}: {e})")
    assert not stale, "used_in names that do not exist under keras_ft:\n" + "\n".join(stale)


def test_used_in_names_are_read_as_dotted_names_only():
    api = PrivateAPI(
        "x",
        "model.lora._lora_layers (and through it model.lora.adapter_record), "
        "train.checkpoint.Checkpoints.save",
        "why",
    )
    assert used_in_names(api) == [
        "model.lora._lora_layers",
        "model.lora.adapter_record",
        "train.checkpoint.Checkpoints.save",
    ]
