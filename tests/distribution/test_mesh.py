"""Meshes: parsing, the `auto` rule, layouts that fit, data shards, distributions.

The distributions themselves are made in one subprocess with 8 simulated CPU
devices (the XLA flag must not reach the pytest process).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from keras_ft.config import Config
from keras_ft.distribution import mesh
from keras_ft.distribution.mesh import (
    DataShard,
    choose_mesh,
    data_shard,
    fit_axes,
    make_distribution,
    parse_mesh,
)

GB = 1e9


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("auto", None),
        ("1x1", (1, 1)),
        ("8x1", (8, 1)),
        ("1x8", (1, 8)),
        ("2x4", (2, 4)),
        ("16x2", (16, 2)),
    ],
)
def test_parse_mesh(spec, expected):
    assert parse_mesh(spec) == expected


@pytest.mark.parametrize(
    "spec", ["8", "0x8", "2x0", "2*4", "x4", "2x4x1", "auto ", "-1x8", "08x1", ""]
)
def test_a_bad_mesh_is_refused_naming_the_field_and_the_forms(spec):
    with pytest.raises(ValueError) as error:
        parse_mesh(spec)
    message = str(error.value)
    assert "`mesh` must be 'auto' or DxM" in message and "2x4" in message
    assert f"Received: mesh={spec!r}" in message
    with pytest.raises(ValueError, match="`mesh` must be"):
        Config(mesh=spec)


def test_choose_mesh_data_parallel_when_one_device_holds_the_model():
    # Gemma 2B in bfloat16 on a TPU v3-8 core (16 GiB): 5 GB of weights.
    data, model, reason = choose_mesh(8, 2_506_000_000, 2, 16 * 2**30, 3 * GB)
    assert (data, model) == (8, 1)
    assert reason.startswith("data-parallel over 8 devices")
    assert "weights 5.01 GB + the rest of a step 3.00 GB <= 80% of one device's 17.2 GB" in reason


def test_choose_mesh_model_parallel_when_it_does_not():
    # Gemma 7B in bfloat16: 17 GB of weights cannot sit on one 16 GiB core.
    data, model, reason = choose_mesh(8, 8_538_000_000, 2, 16 * 2**30, 1 * GB)
    assert (data, model) == (1, 8)
    assert reason.startswith("model-parallel over 8 devices: one cannot hold the model")
    assert "> 80%" in reason


def test_choose_mesh_at_the_margin_and_on_one_device():
    memory = 10 * GB
    fits = choose_mesh(4, 1_000_000_000, 4, memory, memory * mesh.FIT_FRACTION - 4 * GB)
    over = choose_mesh(4, 1_000_000_000, 4, memory, memory * mesh.FIT_FRACTION - 4 * GB + 1)
    assert fits[:2] == (4, 1) and over[:2] == (1, 4)
    assert choose_mesh(1, 10**12, 4, memory)[:2] == (1, 1)  # one device: nothing to choose


def test_fit_axes_replicates_a_dimension_the_axis_does_not_divide():
    sizes = {"batch": 2, "model": 4}
    # Gemma 2B's single key/value head cannot be split over 4 model devices.
    assert fit_axes(("model", "batch", None), (1, 2048, 256), sizes) == (None, "batch", None)
    assert fit_axes(("model", "batch", None), (8, 2048, 256), sizes) == ("model", "batch", None)
    assert fit_axes(("batch", "model"), (3, 10), sizes) == (None, None)
    assert mesh.shard_count(("model", "batch", None), sizes) == 8
    assert mesh.shard_count((None, None), sizes) == 1


@pytest.mark.parametrize(
    "processes, pid, data_axis, expected",
    [
        (1, 0, None, DataShard(0, 1)),  # a single host reads everything
        (2, 1, None, DataShard(1, 2)),
        (2, 0, 8, DataShard(0, 2)),  # 8 replicas on 2 hosts: each reads its half
        (4, 3, 8, DataShard(3, 4)),
        (4, 3, 2, DataShard(1, 2)),  # 2 replicas on 4 hosts: hosts 2 and 3 share one
        (4, 1, 1, DataShard(0, 1)),  # one replica (1x8 over hosts): all read the whole batch
    ],
)
def test_data_shard_follows_keras_data_shard_id(processes, pid, data_axis, expected):
    assert data_shard(processes, pid, data_axis) == expected


def test_data_shard_rows_of_a_global_batch():
    assert DataShard(1, 2).rows(8) == slice(4, 8)
    assert DataShard(0, 1).rows(3) == slice(0, 3)
    assert [DataShard(i, 4).rows(8) for i in range(4)] == [
        slice(0, 2),
        slice(2, 4),
        slice(4, 6),
        slice(6, 8),
    ]
    with pytest.raises(ValueError, match="`batch_size` 6 must be a multiple of 4"):
        DataShard(0, 4).rows(6)
    with pytest.raises(ValueError, match=r"process_id 2 must be in \[0, 1\]"):
        data_shard(2, 2)
    with pytest.raises(ValueError, match="must be a multiple of the number of processes"):
        data_shard(4, 0, 6)


def test_initialize_does_nothing_for_a_single_process(monkeypatch):
    import keras

    called = []
    monkeypatch.setattr(keras.distribution, "initialize", lambda *a: called.append(a))
    assert mesh.initialize(Config()) is False
    assert called == []
    assert mesh.is_writer()


def test_initialize_hands_the_multi_host_settings_to_keras(monkeypatch):
    import jax
    import keras

    called = []
    monkeypatch.setattr(keras.distribution, "initialize", lambda *a: called.append(a))
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    cfg = Config(coordinator_address="localhost:12355", num_processes=2, process_id=1)
    assert mesh.initialize(cfg) is True
    assert mesh.initialize(Config(num_processes=4)) is True  # a TPU pod: JAX detects the rest
    assert called == [("localhost:12355", 2, 1), (None, 4, None)]


def test_on_one_device_1x1_is_no_distribution_and_other_meshes_are_refused():
    import keras_hub

    cls = keras_hub.models.GemmaBackbone
    assert make_distribution(Config(mesh="1x1"), cls) is None
    with pytest.raises(ValueError) as error:
        make_distribution(Config(mesh="2x4"), cls)
    assert "`mesh` 2x4 needs 8 devices; 1 are present" in str(error.value)
    with pytest.raises(ValueError, match="'auto' must be resolved first"):
        make_distribution(Config(), cls)


SCRIPT = textwrap.dedent("""
    import json
    import keras, keras_hub
    from keras_ft.config import Config
    from keras_ft.distribution import describe, make_distribution
    from keras_ft.distribution.mesh import FittedModelParallel
    out = {}
    for cls in (keras_hub.models.GemmaBackbone, keras_hub.models.Gemma3Backbone,
                keras_hub.models.Llama3Backbone):
        for spec in ("8x1", "1x8", "2x4"):
            d = make_distribution(Config(mesh=spec), cls)
            out[f"{cls.__name__} {spec}"] = [type(d).__name__, list(d.device_mesh.shape),
                                             list(d.device_mesh.axis_names), describe(d),
                                             d.batch_dim_name]
    try:
        make_distribution(Config(mesh="1x8"), keras_hub.models.GPT2Backbone)
    except ValueError as e:
        out["gpt2"] = str(e)
    try:
        make_distribution(Config(mesh="4x1"), keras_hub.models.GemmaBackbone)
    except ValueError as e:
        out["4x1"] = str(e)
    print("RESULT " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def eight_devices():
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
    )
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.mark.parametrize("cls", ["GemmaBackbone", "Gemma3Backbone", "Llama3Backbone"])
def test_meshes_make_keras_distributions(eight_devices, cls):
    assert eight_devices[f"{cls} 8x1"] == [
        "DataParallel",
        [8],
        ["batch"],
        "mesh 8x1 (batch x model), data-parallel, 8 devices",
        "batch",
    ]
    assert eight_devices[f"{cls} 1x8"][:3] == ["FittedModelParallel", [1, 8], ["batch", "model"]]
    assert eight_devices[f"{cls} 2x4"][:3] == ["FittedModelParallel", [2, 4], ["batch", "model"]]
    assert eight_devices[f"{cls} 2x4"][3] == (
        "mesh 2x4 (batch x model), model-parallel (layout map), 8 devices"
    )
    assert eight_devices[f"{cls} 2x4"][4] == "batch"


def test_a_backbone_without_a_layout_map_or_a_wrong_device_count_is_refused(eight_devices):
    assert "GPT2Backbone has no layout map" in eight_devices["gpt2"]
    assert "data-parallel mesh (`mesh` Nx1" in eight_devices["gpt2"]
    assert "`mesh` 4x1 needs 4 devices; 8 are present (cpu)" in eight_devices["4x1"]
