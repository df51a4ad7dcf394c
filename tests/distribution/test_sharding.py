"""Sharded loading on 8 simulated CPU devices: each device holds only its shard.

One subprocess runs every check (XLA_FLAGS=--xla_force_host_platform_device_count=8
must not reach the pytest process): the tiny Gemma, Gemma 3 and Llama 3
presets loaded with the distribution set before `from_preset`, under 1x8 and
2x4 meshes, LoRA enabled after; and the host's peak memory while a ~170 MB
(float32) Gemma backbone loads under 1x8 through keras_ft's `load_backbone`
(its lean path: each deferred variable gets its layout before the loader fills it).
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import gc, json, resource, sys
    from pathlib import Path
    import keras, keras_hub, numpy as np
    from keras_ft.config import Config
    from keras_ft.distribution import make_distribution
    from keras_ft.model.causal_lm import load_backbone, load_causal_lm
    from keras_ft.model.lora import enable_lora

    def rss(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    out = {"devices": len(keras.distribution.list_devices())}

    # 1. the host's peak while a larger backbone loads sharded (first: a clean mark).
    big = sys.argv[1]
    cls = keras_hub.models.GemmaBackbone
    distribution = make_distribution(Config(mesh="1x8"), cls)
    keras.distribution.set_distribution(distribution)
    # JAX's runtime and its first sharded jit are not part of the load.
    warm = keras.Variable(np.zeros((64, 64), np.float32))
    import jax
    jax.jit(lambda a: a + 1)(warm.value).block_until_ready()
    gc.collect()
    baseline = rss("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    backbone = load_backbone(big, "float32")  # keras_ft's loader
    out["big"] = {"peak": rss("VmHWM") - baseline,
                  "full_f32": sum(int(np.prod(v.shape)) * 4 for v in backbone.weights),
                  "largest_f32": max(int(np.prod(v.shape)) * 4 for v in backbone.weights),
                  "embedding_shards": sorted({tuple(s.data.shape) for s in
                      backbone.token_embedding.embeddings.value.addressable_shards})}
    del backbone
    keras.distribution.set_distribution(None)
    gc.collect()

    # 2. the tiny presets under 1x8 and 2x4, LoRA enabled after loading.
    for name, preset in zip(sys.argv[2::2], sys.argv[3::2]):
        for mesh in ("1x8", "2x4"):
            config = json.loads((Path(preset) / "config.json").read_text())
            cls = keras.saving.get_registered_object(config["registered_name"])
            distribution = make_distribution(Config(mesh=mesh), cls)
            keras.distribution.set_distribution(distribution)
            causal_lm = load_causal_lm(preset, dtype="float32")  # keras_ft's loader
            enable_lora(causal_lm.backbone, 2)
            shards = {}
            for v in causal_lm.backbone.weights:
                value = v.value
                pieces = {tuple(s.data.shape) for s in value.addressable_shards}
                shards[v.path] = {"shape": list(v.shape), "shards": sorted(pieces),
                                  "count": len(value.addressable_shards),
                                  "spec": [a if a is None or isinstance(a, str) else list(a)
                                           for a in value.sharding.spec]}
            out[f"{name} {mesh}"] = shards
            keras.distribution.set_distribution(None)
            del causal_lm
    print("RESULT " + json.dumps(out))
""")


def _build_big(path):
    """Saves a ~170 MB (float32) Gemma backbone preset; in-process, since only
    its files matter (the pytest process frees it again)."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=16384,
        num_layers=8,
        num_query_heads=8,
        num_key_value_heads=8,
        hidden_dim=512,
        intermediate_dim=4096,
        head_dim=64,
    )
    backbone.save_to_preset(str(path))
    del backbone


def _run(code, *args, devices=None):
    env = dict(os.environ, KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tiny_gemma, tiny_gemma3, tiny_llama3):
    big = tmp_path_factory.mktemp("big_gemma") / "preset"
    _build_big(big)
    done = _run(
        SCRIPT, big, "gemma", tiny_gemma, "gemma3", tiny_gemma3, "llama3", tiny_llama3, devices=8
    )
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def _shard(result, key, path):
    entry = result[key][path]
    assert len(entry["shards"]) == 1, entry  # every device holds a piece of one shape
    assert entry["count"] == 8
    return tuple(entry["shards"][0])


# (variable path, its shape, its shard under 1x8, its shard under 2x4): the
# layout maps (Gemma's for Gemma 3 too) with mesh.fit_axes replicating a
# dimension the axis does not divide (2 query heads cannot be split 4 or 8 ways).
GEMMA = [
    ("token_embedding/embeddings", (160, 16), (20, 16), (40, 8)),  # (model, batch)
    ("decoder_block_0/attention/query/kernel", (2, 16, 8), (2, 16, 8), (2, 8, 8)),
    ("decoder_block_0/attention/key/kernel", (1, 16, 8), (1, 16, 8), (1, 8, 8)),
    ("decoder_block_0/attention/attention_output/kernel", (2, 8, 16), (2, 8, 16), (2, 8, 8)),
    ("decoder_block_0/ffw_gating/kernel", (16, 16), (16, 2), (8, 4)),  # (batch, model)
    ("decoder_block_1/ffw_linear/kernel", (16, 16), (2, 16), (4, 8)),  # (model, batch)
    ("decoder_block_0/pre_attention_norm/scale", (16,), (16,), (16,)),  # replicated
]
# keras-hub's Gemma 3 does not halve intermediate_dim per gate, as Gemma does.
GEMMA3 = [row for row in GEMMA if "ffw" not in row[0]] + [
    ("decoder_block_0/ffw_gating/kernel", (16, 32), (16, 4), (8, 8)),
    ("decoder_block_0/ffw_gating_2/kernel", (16, 32), (16, 4), (8, 8)),
    ("decoder_block_1/ffw_linear/kernel", (32, 16), (4, 16), (8, 8)),
]
LLAMA = [
    ("transformer_layer_0/self_attention/query/kernel", (16, 2, 8), (2, 2, 8), (4, 1, 8)),
    (
        "transformer_layer_0/self_attention/attention_output/kernel",
        (2, 8, 16),
        (2, 8, 16),
        (2, 8, 8),
    ),
    ("transformer_layer_0/feedforward_gate_dense/kernel", (16, 32), (16, 4), (8, 8)),
    ("transformer_layer_1/feedforward_output_dense/kernel", (32, 16), (4, 16), (8, 8)),
]


@pytest.mark.parametrize("name, table", [("gemma", GEMMA), ("gemma3", GEMMA3), ("llama3", LLAMA)])
def test_each_device_holds_only_its_shard_of_the_large_kernels(sharded, name, table):
    assert sharded["devices"] == 8
    for path, shape, one_by_eight, two_by_four in table:
        for mesh, expected in (("1x8", one_by_eight), ("2x4", two_by_four)):
            assert tuple(sharded[f"{name} {mesh}"][path]["shape"]) == shape, path
            assert _shard(sharded, f"{name} {mesh}", path) == expected, (mesh, path)


@pytest.mark.parametrize("name", ["gemma", "gemma3", "llama3"])
def test_lora_kernels_are_replicated_and_embeddings_split_by_vocabulary(sharded, name):
    for mesh in ("1x8", "2x4"):
        variables = sharded[f"{name} {mesh}"]
        lora = {p: v for p, v in variables.items() if "lora_kernel" in p}
        assert lora, "LoRA was enabled"
        for path, entry in lora.items():
            assert entry["shards"] == [entry["shape"]] and entry["count"] == 8, path
        embedding = variables["token_embedding/embeddings"]
        vocab, hidden = embedding["shape"]
        data, model = map(int, mesh.split("x"))
        if vocab % model == 0 and hidden % data == 0:
            assert _shard(sharded, f"{name} {mesh}", "token_embedding/embeddings") == (
                vocab // model,
                hidden // data,
            )


def test_a_sharded_load_stays_below_one_float32_copy_plus_a_margin(sharded):
    big = sharded["big"]
    # The 8 simulated devices share the host's RAM, so the shards of all of
    # them together are one copy. Margin: the largest variable twice (read
    # whole from the file, then placed) plus 64 MB of allocator slack.
    margin = 2 * big["largest_f32"] + 64 * 2**20
    assert big["full_f32"] > 150 * 2**20  # large enough for the bound to mean something
    assert big["peak"] < big["full_f32"] + margin, (big["peak"] / 2**20, big["full_f32"] / 2**20)


def test_the_larger_backbone_loads_sharded(sharded):
    assert sharded["big"]["embedding_shards"] == [[2048, 512]]  # 16384 / 8 rows each
