"""Helpers of the training-script tests: the tiny run's flags, its records and its final state."""

import json
import os

import numpy as np
import torch

from jax_train import train as train_jax
from torch_train import train as train_torch

SCRIPTS = {"torch": train_torch, "jax": train_jax}
EXT = {"torch": "pt", "jax": "npz"}
TIMES = ("epoch_time_s", "samples_per_s", "wall_time_s")


def argv(data_dir, out_dir, *extra):
    """4 steps an epoch (64 images, batch 16) of a 784-16-8-10 MLP."""
    return ["-data_dir", str(data_dir), "-out_dir", str(out_dir), "-batch_size", "16", "-mlp_hidden", "16,8",
            "-no_progress", *extra]


def records(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def without_times(recs):
    return [{k: v for k, v in r.items() if k not in TIMES} for r in recs]


def final_state(run, backend):
    """The run's newest checkpoint as a tree of NumPy arrays and plain values."""
    folder = os.path.join(run, "checkpoints")
    path = os.path.join(folder, sorted(n for n in os.listdir(folder) if n.endswith("." + EXT[backend]))[-1])
    if backend == "jax":
        with np.load(path) as ckpt:
            return {name: json.loads(str(ckpt[name])) if name == "meta" else ckpt[name] for name in ckpt.files}
    return _to_numpy(torch.load(path, weights_only=True))


def _to_numpy(tree):
    if isinstance(tree, torch.Tensor):
        return tree.numpy()
    if isinstance(tree, dict):
        return {key: _to_numpy(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_to_numpy(item) for item in tree]
    return tree


def assert_tree_equal(got, want, where="checkpoint"):
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == want.dtype, where
        np.testing.assert_array_equal(got, want, err_msg=where)
    elif isinstance(want, dict):
        assert sorted(got, key=str) == sorted(want, key=str), where
        for key in want:
            assert_tree_equal(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            assert_tree_equal(a, b, f"{where}[{i}]")
    else:
        assert got == want, where


def assert_same_run(run, reference, backend):
    """The same per-step and per-epoch records (bar timings) and a bit-identical final checkpoint:
    weights, optimizer state, step, schedule position."""
    assert without_times(records(run)) == without_times(records(reference))
    assert_tree_equal(final_state(run, backend), final_state(reference, backend))


def write_mnist(folder, num_train, num_test=20, seed=0):
    """A random mnist.npz in the Keras layout in ``folder``; returns the folder."""
    rng = np.random.default_rng(seed)
    np.savez(folder / "mnist.npz", x_train=rng.integers(0, 256, (num_train, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, num_train, dtype=np.uint8),
             x_test=rng.integers(0, 256, (num_test, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, num_test, dtype=np.uint8))
    return folder
