"""Fixtures shared by the training-script tests: a tiny MNIST npz in the Keras layout."""

import numpy as np
import pytest
from script_helpers import write_mnist


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return write_mnist(tmp_path_factory.mktemp("data"), 64)


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(1)
    np.savez(folder / "cifar10.npz", x_train=rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, (48, 1), dtype=np.uint8),
             x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
             y_test=rng.integers(0, 10, (16, 1), dtype=np.uint8))
    return folder
