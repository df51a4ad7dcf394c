"""The memory plan: numbers against a hand computation, fits, fixes, `keras-ft plan`."""

from click.testing import CliRunner

from keras_ft.cli.plan import main as plan_main
from keras_ft.distribution import memory
from keras_ft.testing import TINY_BACKBONE

# The tiny Gemma of keras_ft.testing: vocabulary 160, 2 layers, hidden 16,
# 2 query heads and 1 key/value head of 8, feed-forward 32 (16 per gate).
TINY = {"class_name": "GemmaBackbone", "config": dict(vocabulary_size=160, **TINY_BACKBONE)}
MIB = 2**20


def _rows(plan):
    return {name: size for name, size, _ in plan.rows}


def test_the_plan_of_a_tiny_gemma_by_hand():
    plan = memory.plan_memory(
        TINY, dtype="float32", lora_rank=4, batch_size=2, sequence_length=8, platform="tpu"
    )
    rows = _rows(plan)
    # Per layer: 2 norms of 16, query 2x16x8, key and value 1x16x8, output 2x8x16,
    # three feed-forward kernels 16x16 = 1568 values; plus the 160x16 embedding
    # and the final norm: 2 x 1568 + 2560 + 16 = 5712 values, 4 bytes each.
    assert plan.num_params == 5712
    assert rows["weights"] == 5712 * 4
    assert rows["float32 copies of weights"] == 0  # not on CPU
    # LoRA rank 4 on query (2x16x4 + 4x8) and value (1x16x4 + 4x8), 2 layers.
    assert rows["LoRA weights"] == 2 * (128 + 32 + 64 + 32) * 4
    assert rows["LoRA gradients + AdamW moments"] == 3 * 2048
    # Per token and layer: 5 x hidden + 2 x query (2x8) + 3 x kv (8) + 3 x ffw (16)
    # = 184 values; 2 rows x 8 tokens; the scores 2 rows x 2 heads x 8 x 8; the
    # mask 2 x 8 x 8; d loss / d hidden 16 tokens x 16.
    a = memory.ACTIVATIONS
    assert (a["hidden"], a["query"], a["kv"], a["ffw"]) == (5, 2, 3, 3)
    layer = 184 * 16 * 4 + 256 * 4
    assert rows["activations kept for backward"] == 2 * layer + 128 + 16 * 16 * 4
    assert rows["output-head chunk"] == 16 * 160 * 4 * 3  # 16 rows (< 128) x vocabulary
    assert rows["backward working set"] == layer + 256 * 4
    assert rows["framework overhead"] == memory.OVERHEAD["tpu"]
    assert plan.train_peak == sum(rows.values())
    assert plan.load_peak == 5712 * 4 + 2560 * 4  # + the embedding read whole


def test_quantized_kernels_and_a_model_parallel_mesh_by_hand():
    int8 = _rows(memory.plan_memory(TINY, dtype="float32", quantize="int8", platform="tpu"))
    # Per layer: int8 kernels 256 + 128 + 128 + 256 + 3 x 256 bytes; float32 scales per
    # output value: query 2x8, key 8, value 8, output 16, feed-forward 3 x 16; norms.
    layer = 1536 + (16 + 8 + 8 + 16 + 48) * 4 + 2 * 16 * 4
    assert int8["weights"] == 2 * layer + 2560 * 4 + 16 * 4  # the embedding stays float
    sharded = _rows(memory.plan_memory(TINY, dtype="float32", mesh=(1, 8), platform="tpu"))
    # 1x8: the embedding (model, batch) and the feed-forward kernels split 8 ways;
    # the attention kernels' 2 and 1 heads cannot be (mesh.fit_axes): replicated.
    layer = (256 + 128 + 128 + 256) * 4 + 3 * 256 * 4 / 8 + 2 * 16 * 4
    assert sharded["weights"] == 2560 * 4 / 8 + 2 * layer + 16 * 4
    # the head's logits: the vocabulary split over the model axis
    assert sharded["output-head chunk"] == 128 * 20 * 4 * 3  # 128-row chunks of 256 tokens


def test_on_cpu_bfloat16_weights_get_float32_copies_and_float32_activations():
    tpu = _rows(memory.plan_memory(TINY, dtype="bfloat16", platform="tpu"))
    cpu = _rows(memory.plan_memory(TINY, dtype="bfloat16", platform="cpu"))
    assert tpu["weights"] == cpu["weights"] == 5712 * 2
    assert cpu["float32 copies of weights"] == 5712 * 4
    assert cpu["activations kept for backward"] > tpu["activations kept for backward"]


def test_activations_grow_with_batch_and_length_and_split_over_the_data_axis():
    def act(**kw):
        return _rows(memory.plan_memory(TINY, platform="tpu", **kw))[
            "activations kept for backward"
        ]

    assert (
        act(batch_size=4, sequence_length=16)
        > act(batch_size=2, sequence_length=16)
        > act(batch_size=2, sequence_length=8)
    )
    assert act(batch_size=8, sequence_length=16, mesh=(8, 1)) == act(
        batch_size=1, sequence_length=16
    )


def test_known_configs_plan_without_a_download():
    plan = memory.plan_memory(
        memory.KNOWN_CONFIGS["gemma_7b_en"], dtype="bfloat16", mesh=(1, 8), platform="tpu"
    )
    assert 8.4e9 < plan.num_params < 8.6e9  # Gemma 7B: 8.54 B parameters
    assert plan.weights < 2.2 * 2**30  # 17 GB of bfloat16 weights over 8 cores
    assert memory.backbone_config("gemma_2b_en") is memory.KNOWN_CONFIGS["gemma_2b_en"]
    for name in ("gemma_2b_en", "gemma3_270m", "llama3.2_1b"):
        memory.plan_memory(memory.KNOWN_CONFIGS[name], platform="tpu")


def test_gemma_7b_fits_a_tpu_v3_8_model_parallel_and_a_t4_not_with_the_fix_replanned():
    config = memory.KNOWN_CONFIGS["gemma_7b_en"]
    plan = memory.plan_memory(
        config, dtype="bfloat16", batch_size=8, sequence_length=256, platform="tpu"
    )
    v3 = memory.fits(plan, memory.NAMED_DEVICES[1], config)
    assert v3.fits and v3.plan.mesh == (1, 8)
    t4 = memory.fits(plan, memory.NAMED_DEVICES[0], config)
    assert not t4.fits
    # Quantizing cannot help: the bfloat16 weights load before they are quantized.
    assert "no single change or pair fits" in t4.fix
    gemma2b = memory.KNOWN_CONFIGS["gemma_2b_en"]
    plan = memory.plan_memory(
        gemma2b, dtype="bfloat16", batch_size=16, sequence_length=512, platform="gpu"
    )
    t4 = memory.fits(plan, memory.NAMED_DEVICES[0], gemma2b)
    assert not t4.fits
    assert t4.fix.startswith(
        "fits with batch_size 4 with gradient_accumulation_steps 4 (the same effective batch)"
    )
    budget = memory.FIT_FRACTION * memory.NAMED_DEVICES[0].memory_bytes
    halved = memory.replan(plan, gemma2b, batch_size=8, gradient_accumulation_steps=2)
    fixed = memory.replan(plan, gemma2b, batch_size=4, gradient_accumulation_steps=4)
    assert halved.peak > budget >= fixed.peak  # the first halving that fits
    assert "does NOT fit" in str(t4) and "T4 16 GB" in str(t4)


def test_the_table_lists_every_item():
    text = memory.format_plan(memory.plan_memory(TINY, platform="tpu"))
    for name in (
        "weights",
        "LoRA weights",
        "LoRA gradients + AdamW moments",
        "activations kept for backward",
        "output-head chunk",
        "framework overhead",
        "training peak",
        "loading peak",
    ):
        assert name in text


def test_keras_ft_plan_prints_the_table_and_the_verdicts_loading_no_weights(
    tiny_gemma, monkeypatch
):
    import keras_hub

    def no_weights(*args, **kwargs):
        raise AssertionError("plan loaded a model")

    monkeypatch.setattr(keras_hub.models.Backbone, "from_preset", no_weights)
    monkeypatch.setattr(keras_hub.models.CausalLM, "from_preset", no_weights)
    result = CliRunner().invoke(
        plan_main,
        [
            "--preset",
            str(tiny_gemma),
            "--batch-size",
            "2",
            "--sequence-length",
            "32",
            "--dtype",
            "bfloat16",
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.output
    assert "GemmaBackbone, 0 M parameters" in out
    assert "Mesh 1x1: one device" in out
    assert "Memory plan per device (mesh 1x1, cpu)" in out and "32 tokens" in out
    assert "present: 1 x CPU" in out
    for device in memory.NAMED_DEVICES:
        assert f"{device.name} ({device.count} x" in out and "fits" in out


def test_keras_ft_plan_names_the_fix_for_a_model_that_does_not_fit():
    result = CliRunner().invoke(
        plan_main,
        [
            "--preset",
            "gemma_7b_en",
            "--dtype",
            "bfloat16",
            "--sequence-length",
            "512",
            "--batch-size",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = {line.strip().split(" (")[0]: line for line in result.output.splitlines()}
    assert "fits, " in lines["TPU v3-8"] and "at mesh 1x8" in lines["TPU v3-8"]
    assert "does NOT fit" in lines["T4 16 GB"]
    assert "fits" in lines["A100 80 GB"]


def test_keras_ft_plan_refuses_a_bad_mesh():
    result = CliRunner().invoke(plan_main, ["--preset", "gemma_2b_en", "--mesh", "8"])
    assert result.exit_code == 2
    assert "`mesh` must be 'auto' or DxM" in result.output
