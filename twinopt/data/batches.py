"""What is done with the arrays: normalization, validation split, augmentation and batching.

``train_jax.py`` and ``train_torch.py`` both get their batches from :func:`train_batches`, so the two
backends see byte-identical inputs in the same order. Everything here is NumPy, never JAX or PyTorch.

This is the lower of the two modules: it also holds what :mod:`twinopt.data.sources` shares with it
(the dataset names and image shapes, :class:`DataError`, the argument checks), and imports nothing
from there.
"""

from __future__ import annotations

from collections.abc import Iterator
from numbers import Integral

import numpy as np

__all__ = [
    "CIFAR_PAD",
    "DATASETS",
    "IMAGE_SHAPES",
    "MEANS",
    "STDS",
    "DataError",
    "eval_batches",
    "normalize",
    "steps_per_epoch",
    "train_batches",
    "validation_split",
]

DATASETS = ("mnist", "cifar")

#: image shape (H, W, C) per dataset
IMAGE_SHAPES = {"mnist": (28, 28, 1), "cifar": (32, 32, 3)}
#: normalization constants, per channel
MEANS = {"mnist": (0.1307,), "cifar": (0.4914, 0.4822, 0.4465)}
STDS = {"mnist": (0.3081,), "cifar": (0.2470, 0.2435, 0.2616)}

CIFAR_PAD = 4  # random-crop padding (pixels per side) for augmentation

_ALIASES = {"mnist": "mnist", "cifar": "cifar", "cifar10": "cifar", "cifar-10": "cifar", "cifar_10": "cifar"}


# --------------------------------------------------------------------------------------------------
# errors and argument checks, shared with sources


class DataError(ValueError):
    """Any problem with the data or the data arguments. The first line of the message says what."""


def _check_name(name) -> str:
    key = str(name).strip().lower() if isinstance(name, str) else None
    if key not in _ALIASES:
        raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    return _ALIASES[key]


def _check_int(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise DataError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise DataError(f"{what} must be >= {minimum}, got {value}")
    return int(value)


# --------------------------------------------------------------------------------------------------
# normalization and batching

_TABLES: dict = {}


def _table(name: str, dtype: np.dtype) -> np.ndarray:
    """(256, C) lookup table: (v/255 - mean_c)/std_c computed in float64, then cast to dtype."""
    key = (name, dtype)
    if key not in _TABLES:
        v = np.arange(256, dtype=np.float64)[:, None]
        mean = np.asarray(MEANS[name], dtype=np.float64)
        std = np.asarray(STDS[name], dtype=np.float64)
        _TABLES[key] = ((v / 255.0 - mean) / std).astype(dtype)
    return _TABLES[key]


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as e:
        raise DataError(f"dtype must be a NumPy floating dtype, got {dtype!r}") from e
    if not np.issubdtype(dt, np.floating):
        raise DataError(f"dtype must be a NumPy floating dtype, got {dt}")
    return dt


def normalize(name, x_uint8, dtype=np.float32) -> np.ndarray:
    """uint8 NHWC (or HWC) images -> float images: (x/255 - mean)/std per channel, in float64, cast to dtype.

    Elementwise identical to ``((x.astype(np.float64) / 255 - mean) / std).astype(dtype)``.
    """
    name = _check_name(name)
    dt = _check_dtype(dtype)
    x = np.asarray(x_uint8)
    if x.dtype != np.uint8:
        raise DataError(f"normalize expects raw uint8 images, got dtype {x.dtype}")
    channels = IMAGE_SHAPES[name][2]
    if x.ndim == 0 or x.shape[-1] != channels:
        raise DataError(
            f"normalize({name!r}) expects images with {channels} channel(s) last (NHWC), got shape {x.shape}"
        )
    table = _table(name, dt)
    out = np.empty(x.shape, dtype=dt)
    for c in range(channels):  # one 1-D lookup per channel: ~3x faster than table[x, arange(C)]
        out[..., c] = table[:, c].take(x[..., c])
    return out


def validation_split(x, y, num_val, seed=0, stratify=False):
    """``(x_train, y_train, x_val, y_val)``: ``num_val`` examples of the training arrays held out, so
    that hyperparameters are chosen on them and never on the test set.

    The held-out examples are the first ``num_val`` of ``np.random.default_rng([seed, 2**31 - 2])
    .permutation(len(y))``; with ``stratify`` each class gives its share of ``num_val`` (in proportion
    to its count, the rounding remainders to the largest fractions), the first of that class in the
    same permutation. Both parts keep the original order: shuffling is :func:`train_batches`' job.
    """
    x, y = np.asarray(x), np.asarray(y)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"labels must have shape ({x.shape[0]},) to match the images, got {y.shape}")
    num_val = _check_int(num_val, "num_val", 1)
    seed = _check_int(seed, "seed", 0)
    n = y.shape[0]
    if num_val >= n:
        raise DataError(f"a validation split of {num_val} leaves no training examples: there are {n}; "
                        f"hold out fewer than {n}")
    order = np.random.default_rng([seed, 2**31 - 2]).permutation(n)
    if stratify:
        classes, counts = np.unique(y, return_counts=True)
        quota = counts * num_val / n
        take = np.floor(quota).astype(np.int64)
        take[np.argsort(take - quota, kind="stable")[: num_val - take.sum()]] += 1
        held = np.concatenate([order[y[order] == c][:k] for c, k in zip(classes, take)])
    else:
        held = order[:num_val]
    val = np.zeros(n, dtype=bool)
    val[held] = True
    return x[~val], y[~val], x[val], y[val]


def steps_per_epoch(num_examples, batch_size) -> int:
    """Training steps in one epoch: the last incomplete batch is dropped."""
    num_examples = _check_int(num_examples, "num_examples", 0)
    batch_size = _check_int(batch_size, "batch_size", 1)
    return num_examples // batch_size


def _infer_name(x: np.ndarray) -> str:
    for name, shape in IMAGE_SHAPES.items():
        if x.ndim == 4 and x.shape[1:] == shape:
            return name
    raise DataError(
        f"images have shape {x.shape}: expected uint8 NHWC batches of MNIST (N, 28, 28, 1) or CIFAR-10 (N, 32, 32, 3)"
    )


def _check_xy(x, y):
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype != np.uint8:
        raise DataError(f"expected the raw uint8 images (normalization happens per batch), got dtype {x.dtype}")
    name = _infer_name(x)
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"labels must have shape ({x.shape[0]},) to match the images, got {y.shape}")
    return name, x, y


def _augment(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random 32x32 crop of the zero-padded (by CIFAR_PAD) normalized batch, then random horizontal flip."""
    b, h, w, _ = batch.shape
    offsets = rng.integers(0, 2 * CIFAR_PAD + 1, size=(b, 2))
    flips = rng.random(b) < 0.5
    pad = CIFAR_PAD
    padded = np.pad(batch, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = offsets[:, 0:1] + np.arange(h)  # (b, h)
    cols = offsets[:, 1:2] + np.arange(w)  # (b, w)
    out = padded[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
    out[flips] = out[flips, :, ::-1]
    return out


def train_batches(x, y, batch_size, *, epoch, seed, augment=False, dtype=np.float32, start_step=0) -> Iterator:
    """One epoch of training batches ``(x_batch, y_batch)``: float NHWC normalized images, int64 labels.

    The order is ``np.random.default_rng([seed, epoch]).permutation(len(x))``; the last incomplete batch
    is dropped. ``augment`` (CIFAR-10 only) crops a random 32x32 window from the normalized image padded
    with 4 zero pixels per side (zero is the normalized mean) and flips it horizontally with p=0.5, drawing
    from ``np.random.default_rng([seed, epoch, 1])`` batch after batch (offsets (B, 2) then flips (B,)).
    ``start_step`` skips that many batches (mid-epoch resume); the remaining batches are exactly those of
    an uninterrupted epoch. Arguments are checked when called, not at the first ``next``.
    """
    name, x, y = _check_xy(x, y)
    batch_size = _check_int(batch_size, "batch_size", 1)
    epoch = _check_int(epoch, "epoch", 0)
    seed = _check_int(seed, "seed", 0)
    dt = _check_dtype(dtype)
    if augment and name != "cifar":
        raise DataError(f"augment=True is only defined for CIFAR-10 (random crop + flip), not {name}")
    steps = steps_per_epoch(x.shape[0], batch_size)
    if steps == 0:
        raise DataError(f"batch_size={batch_size} is larger than the {x.shape[0]} training examples: no full batch")
    start_step = _check_int(start_step, "start_step", 0)
    if start_step > steps:
        raise DataError(f"start_step={start_step} is past the end of the epoch ({steps} steps)")
    return _train_iter(name, x, y, batch_size, epoch, seed, bool(augment), dt, start_step, steps)


def _train_iter(name, x, y, batch_size, epoch, seed, augment, dt, start_step, steps):
    order = np.random.default_rng([seed, epoch]).permutation(x.shape[0])
    aug_rng = np.random.default_rng([seed, epoch, 1]) if augment else None
    for step in range(steps):
        if augment and step < start_step:  # keep the augmentation draws in step with an uninterrupted run
            aug_rng.integers(0, 2 * CIFAR_PAD + 1, size=(batch_size, 2))
            aug_rng.random(batch_size)
        if step < start_step:
            continue
        idx = order[step * batch_size : (step + 1) * batch_size]
        xb = normalize(name, x[idx], dt)
        if augment:
            xb = _augment(xb, aug_rng)
        yield xb, y[idx].astype(np.int64)


def eval_batches(x, y, batch_size, dtype=np.float32) -> Iterator:
    """Batches ``(x_batch, y_batch)`` in the stored order, including the last partial batch."""
    name, x, y = _check_xy(x, y)
    batch_size = _check_int(batch_size, "batch_size", 1)
    dt = _check_dtype(dtype)
    return _eval_iter(name, x, y, batch_size, dt)


def _eval_iter(name, x, y, batch_size, dt):
    for start in range(0, x.shape[0], batch_size):
        yield normalize(name, x[start : start + batch_size], dt), y[start : start + batch_size].astype(np.int64)
