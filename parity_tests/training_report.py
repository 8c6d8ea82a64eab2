"""Print the training-level parity as a Markdown table: ``python -m parity_tests.training_report``.

For every optimizer key and both models: train_jax.py and train_torch.py in float64 with the
same flags (the fake-data setup of test_training_parity: 100 steps, batch 8), the largest
relative difference of the per-step losses and of the final weights (per-element, relative to
the tensor's scale), and the same for Adam in float32.
"""

import contextlib
import io
import tempfile
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from twinopt.registry import KEYS  # noqa: E402

from . import test_training_parity as t  # noqa: E402


def measure(tmp, key, dataset, dtype="float64"):
    runs = t.train_both(tmp, tmp / "data", dataset, key, dtype=dtype)
    loss_err = t.rel(t.step_losses(runs["jax"]), t.step_losses(runs["torch"]))
    weights = t.weights_rel(t.final_weights(runs["jax"]), t.final_weights(runs["torch"]))
    return loss_err, weights.max(), int(np.sum(weights > t.TOL))


def main():
    start = time.perf_counter()
    print("| optimizer | model | dtype | per-step loss | final weights | weights beyond 1e-9 |")
    print("|---|---|---|---|---|---|")
    cases = [(key, ds, "float64") for key in KEYS for ds in ("mnist", "cifar")]
    cases += [("adam", ds, "float32") for ds in ("mnist", "cifar")]
    for key, dataset, dtype in cases:
        with tempfile.TemporaryDirectory() as folder:
            tmp = Path(folder)
            (tmp / "data").mkdir()
            t.write_fake_data(tmp / "data")
            with contextlib.redirect_stdout(io.StringIO()):  # the scripts' own progress lines
                loss_err, weight_err, beyond = measure(tmp, key, dataset, dtype)
        model = "mnist_mlp" if dataset == "mnist" else "cifar10_3c3d"
        print(f"| {key} | {model} | {dtype} | {loss_err:.1e} | {weight_err:.1e} | {beyond} |", flush=True)
    print(f"\n{t.STEPS} steps, batch {t.BATCH}; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
