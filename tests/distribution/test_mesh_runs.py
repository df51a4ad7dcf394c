"""Whole runs (`finetune`) on 8 simulated CPU devices equal the single-device run.

One subprocess (tests/distribution/mesh_worker.py, XLA_FLAGS=
--xla_force_host_platform_device_count=8, so the flag never reaches pytest)
runs every mesh; the 1x1 runs inside it are the single-device reference
(`make_distribution` sets no distribution: device 0 only). A second pair of
processes is one two-host run over a loopback coordinator.

The worker keeps JAX's persistent compilation cache (keras_ft's
`compile_cache_dir`, in the test's own directory): each program is compiled
once, the first time; a resumed run loads the executables its uninterrupted
run on the same mesh compiled (a cached executable is the same program,
tests/test_compile_cache.py).

Tolerance: float32 on CPU. A mesh splits matmuls and the loss's sums into
per-device partial sums added in another order (1x8: the embedding's and
feed-forward's contractions; 8x1: the batch), so values differ by float32
rounding, ~1e-7 relative per op. Measured (tiny Gemma, 1x1 vs 2x4, 3 AdamW
steps): losses within 4.8e-7, adapter values within 1.1e-6; the bounds below
(rtol 1e-5, atol 1e-5) leave ~10x room and stay far below what a real
difference makes (a LoRA init drawn from another seed moved the adapter by 1.1).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("mesh_worker.py")
REPO = Path(__file__).resolve().parents[2]
RTOL = ATOL = 1e-5
PAIRS = [
    ("How do I boil an egg?", "Put it in boiling water for nine minutes."),
    ("Name a colour.", "Blue."),
    ("What is two plus two?", "Four."),
    ("Say hi.", "Hi there!"),
    ("Capital of France?", "Paris."),
    ("Opposite of hot?", "Cold."),
    ("A fruit?", "An apple."),
    ("Count to three.", "One, two, three."),
    ("Spell cat.", "C, A, T."),
    ("Is ice cold?", "Yes, ice is cold."),
]


def _env(devices):
    env = dict(
        os.environ,
        KERAS_BACKEND="jax",
        TF_CPP_MIN_LOG_LEVEL="3",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    return env


def _result(stdout: str) -> dict:
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    # 40 examples: 32 train (4 full batches of 8), 8 held out.
    path = tmp_path_factory.mktemp("mesh_data") / "pairs.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt": p + " " * i, "completion": c}) + "\n"
            for i in range(4)
            for p, c in PAIRS
        )
    )
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_file, tiny_gemma, tiny_gemma3, tiny_llama3):
    tmp = tmp_path_factory.mktemp("mesh_runs")
    base = dict(
        data=[str(data_file)],
        batch_size=8,
        max_steps=4,
        learning_rate=1e-2,
        lora_rank=4,
        validation_fraction=0.2,
        sample_prompts=["Hi"],
        max_new_tokens=2,
        dtype="float32",
        checkpoint_every_steps=2,
        keep_checkpoints=5,
    )
    jobs = []

    def add(name, preset, mesh, **changes):
        jobs.append(
            {
                "name": name,
                "config": dict(
                    base, preset=str(preset), mesh=mesh, output_dir=str(tmp / name), **changes
                ),
            }
        )

    for mesh in ("1x1", "8x1", "1x8", "2x4"):  # LoRA alpha and all targets on Gemma
        add(f"gemma {mesh}", tiny_gemma, mesh, lora_alpha=8.0, lora_targets="all")
    for mesh in ("1x1", "2x4"):  # packing and gradient accumulation on Gemma 3
        add(
            f"gemma3 {mesh}",
            tiny_gemma3,
            mesh,
            packing=True,
            batch_size=4,
            gradient_accumulation_steps=2,
        )
    for mesh in ("1x1", "2x4"):  # an int8 base on Llama 3
        add(f"llama3 {mesh}", tiny_llama3, mesh, quantize="int8", template="llama3")
    # The 2x4 Gemma run cut off after its step-2 checkpoint, resumed on 1 device and on 8x1.
    for mesh in ("1x1", "8x1"):  # their samples are not compared: none generated
        add(
            f"gemma 2x4 resumed {mesh}",
            tiny_gemma,
            mesh,
            lora_alpha=8.0,
            lora_targets="all",
            sample_prompts=[],
        )
        jobs[-1].update(copy_from=str(tmp / "gemma 2x4"), drop_checkpoints_after=2)
    # The report and generation commands on the 1x1 Gemma run's adapter, by mesh.
    commands = []
    for mesh in ("1x1", "2x4"):
        commands.append(
            {
                "name": f"evaluate {mesh}",
                "args": ["evaluate", "--adapter", str(tmp / "gemma 1x1"), "--mesh", mesh]
                + ["--eval-examples", "8", "--num-generate", "2", "--eval-batch-size", "4"]
                + ["--max-new-tokens", "3", "--no-latency"]
                + ["--report-dir", str(tmp / f"eval {mesh}")],
            }
        )
    for mesh in ("1x1", "1x8"):
        commands.append(
            {
                "name": f"generate {mesh}",
                "args": ["generate", "--preset", str(tiny_gemma), "--mesh", mesh]
                + ["--adapter", str(tmp / "gemma 1x1"), "--max-new-tokens", "4", "Hi there"],
            }
        )
    (tmp / "jobs.json").write_text(json.dumps({"runs": jobs, "commands": commands}))
    # The compile cache on (the suite turns it off), under the test's directory
    # ("auto": $KERAS_FT_CACHE/jax_compile_cache), for the runs and the commands.
    env = dict(_env(8), KERAS_FT_COMPILE_CACHE="1", KERAS_FT_CACHE=str(tmp / "keras_ft_cache"))
    done = subprocess.run(
        [sys.executable, str(WORKER), str(tmp / "jobs.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return _result(done.stdout)


def _assert_same_adapter(a, b, what):
    assert sorted(a) == sorted(b), what
    for key in a:
        np.testing.assert_allclose(
            np.asarray(b[key]), np.asarray(a[key]), rtol=RTOL, atol=ATOL, err_msg=f"{what}: {key}"
        )


@pytest.mark.parametrize(
    "name, meshes", [("gemma", ("8x1", "1x8", "2x4")), ("gemma3", ("2x4",)), ("llama3", ("2x4",))]
)
def test_a_mesh_gives_the_single_device_losses_and_adapter(runs, name, meshes):
    assert runs["devices"] == 8
    single = runs["runs"][f"{name} 1x1"]
    assert len(single["losses"]) == 4
    for mesh in meshes:
        run = runs["runs"][f"{name} {mesh}"]
        np.testing.assert_allclose(
            run["losses"], single["losses"], rtol=RTOL, atol=ATOL, err_msg=mesh
        )
        _assert_same_adapter(single["adapter"], run["adapter"], f"{name} {mesh}")
        for which in ("metrics_before", "metrics_after"):  # evaluate_tokens under the mesh
            np.testing.assert_allclose(
                run[which]["loss"], single[which]["loss"], rtol=RTOL, err_msg=which
            )
            assert run[which]["num_tokens"] == single[which]["num_tokens"]
        assert run["samples"] == single["samples"]  # generation under the mesh (greedy)
        assert run["distribution"] == "None"  # finetune restores the distribution


def test_the_run_holds_the_layout_maps_shards(runs):
    shards = runs["shardings"]
    embedding = "token_embedding/embeddings"  # (160, 16): (model, batch) in Gemma's map
    assert shards["gemma 1x1"][embedding] == [[160, 16]]
    assert shards["gemma 8x1"][embedding] == [[160, 16]]  # data-parallel: replicated
    assert shards["gemma 1x8"][embedding] == [[20, 16]]
    assert shards["gemma 2x4"][embedding] == [[40, 8]]
    gate = "decoder_block_0/ffw_gating/kernel"  # (16, 16): (batch, model)
    assert shards["gemma 1x8"][gate] == [[16, 2]] and shards["gemma 2x4"][gate] == [[8, 4]]
    for name, table in shards.items():  # LoRA kernels: replicated whole on every device
        lora = {p: s for p, s in table.items() if "lora_kernel" in p}
        assert lora, name
        for path, pieces in lora.items():
            assert len(pieces) == 1, (name, path)
            assert pieces == shards["gemma 1x1"].get(path, pieces), (name, path)


@pytest.mark.parametrize("mesh", ["1x1", "8x1"])
def test_a_2x4_checkpoint_resumes_on_another_mesh_to_the_same_adapter(runs, mesh):
    uninterrupted = runs["runs"]["gemma 2x4"]
    resumed = runs["runs"][f"gemma 2x4 resumed {mesh}"]
    # metrics.jsonl keeps steps 1-2 from before the cut and adds 3-4
    np.testing.assert_allclose(resumed["losses"], uninterrupted["losses"], rtol=RTOL, atol=ATOL)
    _assert_same_adapter(uninterrupted["adapter"], resumed["adapter"], f"resumed on {mesh}")


def test_the_evaluation_report_and_generation_under_a_mesh_equal_one_devices(runs):
    single, mesh = runs["commands"]["evaluate 1x1"], runs["commands"]["evaluate 2x4"]
    assert mesh["distribution"] == single["distribution"] == "None"  # restored after
    for model in ("base", "tuned"):
        a, b = single["results"][model]["tokens"], mesh["results"][model]["tokens"]
        np.testing.assert_allclose(b["loss"], a["loss"], rtol=RTOL, err_msg=model)
        assert b["num_tokens"] == a["num_tokens"] > 0
        assert mesh["results"][model]["generations"] == single["results"][model]["generations"]
    assert (
        single["results"]["tuned"]["tokens"]["loss"] != single["results"]["base"]["tokens"]["loss"]
    )
    replies = runs["commands"]["generate 1x1"]["stdout"]
    assert replies.strip() and runs["commands"]["generate 1x8"]["stdout"] == replies


TWO_HOSTS = """
import sys
from keras_ft import pipeline
from keras_ft.config import Config
process, port, out, preset, data = sys.argv[1:]
cfg = Config(preset=preset, data=(data,), batch_size=8, max_steps=2, learning_rate=1e-2,
             lora_rank=4, validation_fraction=0.2, sample_prompts=(),
             dtype="float32", mesh="8x1", coordinator_address=f"127.0.0.1:{port}",
             num_processes=2, process_id=int(process), output_dir=out)
result = pipeline.finetune(cfg)
print("RESULT", result.adapter_path, result.metrics_after["loss"])
"""


def test_two_processes_train_one_run_and_only_process_0_writes(tmp_path, data_file, tiny_gemma):
    with socket.socket() as s:  # a free loopback port for the coordinator
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "run"
    # Two local processes of 4 simulated devices each: one 8x1 mesh across them.
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                TWO_HOSTS,
                str(i),
                str(port),
                str(out),
                str(tiny_gemma),
                str(data_file),
            ],
            env=_env(4),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-4000:]
        results.append([ln for ln in stdout.splitlines() if ln.startswith("RESULT")][-1])
    (_, adapter0, loss0), (_, adapter1, loss1) = (r.split() for r in results)
    assert adapter0 == str(out / "adapter.lora.h5") and adapter1 == "None"
    assert loss0 == loss1  # both see the whole held-out set's statistics
    assert sorted(p.name for p in out.rglob("*.lora.h5")) == ["adapter.lora.h5"] * 2  # + ckpt
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    steps = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    assert [r["step"] for r in steps if "epoch" not in r] == [1, 2]  # written once each
