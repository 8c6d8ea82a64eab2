"""Training throughput (``bench.py train``): both training scripts against a textbook loop and
against the machine's own matmul and conv throughput, measured in the same run.

The scripts run as they would for a user (a subprocess, Adam, batch 128, float32); their
throughput is the second epoch's (the first includes JIT compilation and warm-up). The textbook
loops (``torch_train.benchmarks.textbook_samples_per_s``, ``jax_train.benchmarks.textbook_samples_per_s``)
train the same model on the same batches the way tutorials do. Achieved GFLOP/s uses the FLOPs
of one training step as XLA counts them (forward, backward and update).

Imports neither backend: the caller passes the backends' benchmark modules in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from twinopt import data
from twinopt.models import MODELS

BATCH_SIZE = 128
OPTIMIZER = "adam"
# (dataset, training images: None = all); CIFAR on a subset keeps the JAX run (XLA:CPU
# convolutions) to about a minute.
CONFIGS = (("mnist", None), ("cifar", 4096))
# The training scripts as modules (python -m), which an installed distribution runs as well.
SCRIPTS = {"torch": "torch_train.train", "jax": "jax_train.train"}


def script_samples_per_s(backend, dataset, num_train, data_dir, workdir) -> float:
    """Samples/s of the second epoch of a two-epoch run of the backend's training script."""
    out_dir = Path(workdir) / f"{dataset}-{backend}"
    cmd = [sys.executable, "-m", SCRIPTS[backend], "-dataset", dataset, "-optimizer", OPTIMIZER,
           "-num_epochs", "2", "-batch_size", str(BATCH_SIZE), "-no_progress", "-out_dir", str(out_dir)]
    cmd += ["-num_train", str(num_train)] if num_train else []
    cmd += ["-data_dir", str(data_dir)] if data_dir else []
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    epochs = [r for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines()) if "samples_per_s" in r]
    return epochs[-1]["samples_per_s"]


def run_all(data_dir, mods) -> list[dict]:
    """One record per (dataset, backend): script and textbook samples/s, the machine's matmul and
    conv GFLOP/s, and the model's training FLOPs per sample. ``mods``: backend name -> its
    benchmark module (``torch_train.benchmarks``, ``jax_train.benchmarks``)."""
    compute = {b: {"matmul_gflops": m.matmul_gflops(), "conv_gflops": m.conv_gflops()} for b, m in mods.items()}
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for dataset, num_train in CONFIGS:
            ds = data.load_dataset(dataset, data_dir, num_train=num_train)
            flops = None
            if "jax" in mods:
                flops = mods["jax"].train_flops_per_sample(dataset, BATCH_SIZE)
            for backend, mod in mods.items():
                record = {"dataset": dataset, "model": MODELS[dataset], "data": ds.source, "num_train": len(ds.y_train),
                          "backend": backend, "flops_per_sample": flops, **compute[backend],
                          "script": script_samples_per_s(backend, dataset, num_train, data_dir, workdir),
                          "textbook": mod.textbook_samples_per_s(ds, dataset, BATCH_SIZE)}
                results.append(record)
                print(f"{dataset} {backend}: script {record['script']:.0f}, textbook {record['textbook']:.0f} "
                      "samples/s", flush=True)
    return results


def markdown(payload) -> str:
    m = payload["machine"]
    lines = [f"Measured {m['date']} on {m['cpu']} ({m['cores']} cores), float32, Adam, batch {BATCH_SIZE}; "
             "`python bench.py train`.", "",
             "| model (train images) | backend | script samples/s | textbook loop samples/s | script / textbook "
             "| achieved GFLOP/s | matmul GFLOP/s | conv GFLOP/s | % of matmul |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in payload["results"]:
        achieved = r["script"] * r["flops_per_sample"] / 1e9 if r["flops_per_sample"] else None
        cells = [f"{r['model']} ({r['num_train']:,})", r["backend"], f"{r['script']:,.0f}", f"{r['textbook']:,.0f}",
                 f"{r['script'] / r['textbook']:.2f}", f"{achieved:.1f}" if achieved else "-",
                 f"{r['matmul_gflops']:.0f}", f"{r['conv_gflops']:.0f}",
                 f"{100 * achieved / r['matmul_gflops']:.0f}%" if achieved else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
