"""Training-level parity: train_jax.py and train_torch.py with the same flags and seed record
the same per-step losses and end with the same weights, for every optimizer key and both
models (float64, 100 steps: batch 8 on 800 images, one epoch)."""

import json
import os

import numpy as np
import pytest

from jax_train import train as train_jax
from torch_train import train as train_torch
from twinopt import runs
from twinopt.registry import KEYS

TOL = 1e-9  # SPEC.md, float64
STEPS, BATCH = 100, 8
# float32 (no bound in SPEC.md; measured here, see the README): the first losses agree to float32
# rounding, then differences in rounding grow along the trajectory (max 2.1e-7 for the MLP, 1.3e-2 for
# the CNN after 100 steps of Adam on this data).
F32_FIRST_TOL, F32_TOL = 1e-6, 5e-2
# Adagrad's step g / (sqrt(sum g^2) + 1e-10) does not shrink with g: for a weight whose gradients
# are all tiny results of cancellation (|g| near rounding), the backends' different summation
# orders give different steps. On the CNN one weight of 895,210 (fc2) ends 4e-9 apart (per-tensor
# scale), every other one within 3e-12; the losses still agree to 1e-9. Allowed: at most this many
# weights beyond TOL, none beyond 1e-7.
ADAGRAD_OUTLIERS = 2


def write_fake_data(folder, seed=0):
    """Small Keras-layout npz files with random images: parity needs no real data."""
    rng = np.random.default_rng(seed)
    for name, shape in (("mnist.npz", (28, 28)), ("cifar10.npz", (32, 32, 3))):
        n_train, n_test = STEPS * BATCH, 100
        np.savez(folder / name,
                 x_train=rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
                 y_train=rng.integers(0, 10, n_train, dtype=np.uint8),
                 x_test=rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
                 y_test=rng.integers(0, 10, n_test, dtype=np.uint8))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    write_fake_data(folder)
    return folder


def train_both(tmp_path, data_dir, dataset, key, dtype="float64", extra=()):
    argv = ["-dataset", dataset, "-data_dir", str(data_dir), "-batch_size", str(BATCH), "-num_epochs", "1",
            "-optimizer", key, "-dtype", dtype, "-no_progress", "-eval_batch_size", "50", *extra]
    runs = {}
    for name, script in (("torch", train_torch), ("jax", train_jax)):
        out = tmp_path / name
        script.main([*argv, "-out_dir", str(out)])
        runs[name] = out
    return runs


def step_losses(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    return np.array([r["loss"] for r in records if "loss" in r])


def final_weights(run):
    return runs.read_weights(os.path.join(run, "checkpoints", max(os.listdir(os.path.join(run, "checkpoints")))))


def rel(a, b):
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def weights_rel(a, b):
    """Per-element error relative to the tensor's scale, for all weights."""
    return np.concatenate([(np.abs(a[k] - b[k]) / np.max(np.abs(b[k]))).ravel() for k in b])


# Every key on the MLP; on the CNN (about 20 s a key) those whose steps differ most in kind, to
# keep CI short: `python -m parity_tests.training_report` runs every key on both models.
CNN_KEYS = ("sgd", "adagrad", "adam", "adabound", "aggmo")


@pytest.mark.parametrize("dataset,key", [("mnist", key) for key in KEYS] + [("cifar", key) for key in CNN_KEYS])
def test_per_step_losses_and_final_weights_agree(tmp_path, data_dir, dataset, key):
    runs = train_both(tmp_path, data_dir, dataset, key)
    torch_losses, jax_losses = step_losses(runs["torch"]), step_losses(runs["jax"])
    assert len(torch_losses) == len(jax_losses) == STEPS
    assert rel(jax_losses, torch_losses) <= TOL
    errors = weights_rel(final_weights(runs["jax"]), final_weights(runs["torch"]))
    if key == "adagrad":
        assert np.sum(errors > TOL) <= ADAGRAD_OUTLIERS and errors.max() <= 1e-7
    else:
        assert errors.max() <= TOL
    assert abs(torch_losses[-1] - torch_losses[0]) > 1e-6  # guard: training moved


@pytest.mark.parametrize("extra", [("-lookahead",), ("-schedule", "cosine"), ("-schedule", "step", "-lookahead")])
def test_lookahead_and_schedules_agree(tmp_path, data_dir, extra):
    runs = train_both(tmp_path, data_dir, "mnist", "adabound", extra=extra)
    assert rel(step_losses(runs["jax"]), step_losses(runs["torch"])) <= TOL


@pytest.mark.parametrize("dataset", ["mnist", "cifar"])
def test_float32_agreement(tmp_path, data_dir, dataset):
    runs = train_both(tmp_path, data_dir, dataset, "adam", dtype="float32")
    jax_losses, torch_losses = step_losses(runs["jax"]), step_losses(runs["torch"])
    assert rel(jax_losses[:1], torch_losses[:1]) <= F32_FIRST_TOL
    assert rel(jax_losses, torch_losses) <= F32_TOL
