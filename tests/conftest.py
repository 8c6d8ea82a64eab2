"""Fixtures shared by the training-script tests: a tiny MNIST npz in the Keras layout."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    np.savez(folder / "mnist.npz", x_train=rng.integers(0, 256, (64, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 64, dtype=np.uint8),
             x_test=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_test=rng.integers(0, 10, 20, dtype=np.uint8))
    return folder


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(1)
    np.savez(folder / "cifar10.npz", x_train=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, (48, 1), dtype=np.uint8),
             x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
             y_test=rng.integers(0, 10, (16, 1), dtype=np.uint8))
    return folder
