"""Runs `finetune` under several meshes in one process; prints one RESULT line.

Run by tests/distribution/test_mesh_runs.py with
XLA_FLAGS=--xla_force_host_platform_device_count=8 (never imported by pytest):

    python mesh_worker.py JOBS.json

JOBS.json: {"runs": [{"name", "config": {...Config fields...}, "copy_from"?,
"drop_checkpoints_after"?}], "commands": [{"name", "args": [...]}]}. A run with `copy_from` starts in a copy of that
run's directory with the checkpoints after step `drop_checkpoints_after`
removed (an interrupted run), so it resumes from there.

Per run the result holds the step losses of metrics.jsonl, the final adapter
(every LoRA array, as lists), the metrics before/after, the samples, the
files written, and the shardings of a few variables (embeddings, a
feed-forward kernel, the LoRA kernels) as the run's model holds them. Each
command (`keras-ft ARGS`, run in-process after the runs) gives its stdout
and, when it wrote one, its report's results.json.
"""

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")

import h5py  # noqa: E402
import keras  # noqa: E402

from keras_ft import cli, pipeline  # noqa: E402
from keras_ft.config import Config  # noqa: E402
from keras_ft.train.checkpoint import Checkpoints  # noqa: E402


def adapter_arrays(path: Path) -> dict:
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                arrays.__setitem__(name, obj[()].tolist())
                if isinstance(obj, h5py.Dataset)
                else None
            )
        )
    return arrays


def main():
    jobs = json.loads(Path(sys.argv[1]).read_text())
    out = {"devices": len(keras.distribution.list_devices()), "runs": {}}
    shardings, current = {}, {}
    original_build = pipeline.build_model

    def build_and_record(cfg, *args, **kwargs):  # records what the mesh placed where
        causal_lm = original_build(cfg, *args, **kwargs)
        if current["name"] not in shardings:
            shardings[current["name"]] = {
                v.path: sorted({tuple(s.data.shape) for s in v.value.addressable_shards})
                for v in causal_lm.backbone.weights
                if "embeddings" in v.path
                or "lora" in v.path
                or "ffw_gating" in v.path
                or "feedforward_gate" in v.path
            }
        return causal_lm

    pipeline.build_model = build_and_record
    for job in jobs["runs"]:
        cfg = Config(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in job["config"].items()}
        )
        run_dir = Path(cfg.output_dir)
        current["name"] = job["name"]
        if job.get("copy_from"):
            shutil.copytree(job["copy_from"], run_dir)
            for path in Checkpoints(run_dir / "checkpoints", 100).all():
                if int(path.name.split("-")[1]) > job["drop_checkpoints_after"]:
                    shutil.rmtree(path)
            for name in ("adapter.lora.h5", "adapter_config.json", "summary.json"):
                (run_dir / name).unlink(missing_ok=True)
        result = pipeline.finetune(cfg)
        steps = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
        out["runs"][job["name"]] = {
            "losses": [r["step_loss"] for r in steps if "step_loss" in r and "epoch" not in r],
            "adapter": adapter_arrays(result.adapter_path),
            "metrics_before": result.metrics_before,
            "metrics_after": result.metrics_after,
            "samples": result.samples,
            "distribution": str(keras.distribution.distribution()),
            "files": sorted(p.name for p in run_dir.iterdir()),
        }
    out["commands"] = {}
    for job in jobs.get("commands", []):
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            cli.main(job["args"], standalone_mode=False)
        report = (
            job["args"][job["args"].index("--report-dir") + 1]
            if "--report-dir" in job["args"]
            else None
        )
        out["commands"][job["name"]] = {
            "stdout": stdout.getvalue(),
            "results": json.loads((Path(report) / "results.json").read_text()) if report else None,
            "distribution": str(keras.distribution.distribution()),
        }
    out["shardings"] = {
        name: {p: [list(s) for s in v] for p, v in table.items()}
        for name, table in shardings.items()
    }
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
