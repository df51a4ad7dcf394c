# %% [markdown]
# # Gemma 2B + LoRA on a Kaggle TPU v3-8: data parallel, mesh 8x1
#
# Gemma 2B (5 GB in bfloat16) fits one 16 GB core, so keras_ft's `auto` mesh
# is data-parallel: a Keras `DataParallel` distribution replicates the weights
# on all 8 cores and splits every global batch 8 ways (one row per core at
# batch 8), instead of training on one core of eight. LoRA rank 4 on Dolly,
# the design card's recipe. Before running:
# - accept the Gemma license on Kaggle (kaggle.com/models/keras/gemma);
# - Settings -> Accelerator: "TPU VM v3-8"; Internet on;
# - add this repository to the notebook (e.g. as a Kaggle dataset named keras-ft).
# Dry run (config, mesh and memory plan; no weights), anywhere:
#   python experiments/kaggle/gemma_2b_en_tpu_v3_8_data_parallel.py --dry-run

# %% Install (a Kaggle TPU VM notebook cell)
# !pip install -q "keras>=3.15,<3.16" "keras-hub>=0.32,<0.33" "kagglehub>=1.0,<2" \
#     "jax[tpu]>=0.10,<0.11" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
# !pip install -q /kaggle/input/keras-ft

# %%
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
# JAX's default preallocation (75 %) would leave a quarter of each core's HBM unused.
os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "1.00")

from keras_ft import Config, finetune  # noqa: E402
from keras_ft.distribution import memory  # noqa: E402

# keras-hub's gemma_2b_en preset, as `from_preset` downloads it with kagglehub.
KAGGLE_HANDLE = "kaggle://keras/gemma/keras/gemma_2b_en/3"
TARGET = "TPU v3-8"  # memory.NAMED_DEVICES: 8 cores x 16 GiB
CONFIG = Config(
    preset=KAGGLE_HANDLE,
    mesh="auto",  # the run prints its choice: 8x1, data-parallel (the model fits one core)
    dtype="bfloat16",
    lora_rank=4,
    data=("kaggle:databricks/databricks-dolly-15k",),
    drop_with_context=True,
    num_examples=1000,
    template="instruction",
    sequence_length=256,
    batch_size=8,  # the global batch: one row per core
    epochs=1,
    learning_rate=5e-5,
    sampler="top_k",
    output_dir="/kaggle/working/gemma_2b_en_lora_dolly",
)


def dry_run(device: memory.Device | None = None) -> memory.RunPlan:
    """The mesh and memory plan for `TARGET` (or `device`), loading no weights."""
    target = device or next(d for d in memory.NAMED_DEVICES if d.name == TARGET)
    return memory.plan_run(CONFIG, device=target, config=memory.backbone_config("gemma_2b_en"))


if __name__ == "__main__":
    if "--dry-run" in sys.argv:
        print(dry_run())
    else:
        result = finetune(CONFIG)
        print(f"Run directory: {result.run_dir}")
