"""The two test-problem models, described and initialized without any backend.

The architectures are the DeepOBS test problems (Schneider et al. 2019), so results compare with
the published baselines:

``mnist_mlp``
    NHWC 28x28x1 image, flattened to 784 -> dense 1000 -> ReLU -> 500 -> ReLU -> 100 -> ReLU -> 10
    logits. Hidden sizes: ``hidden=(1000, 500, 100)``. Weights: truncated normal, stddev 0.03,
    truncated at 2 stddev and re-drawn (TF's ``truncated_normal``; the resulting standard
    deviation is 0.03 * 0.8796 = 0.0264). Biases 0.

``cifar10_3c3d``
    NHWC 32x32x3 image; conv 64 5x5 VALID + ReLU; max-pool 3x3/2 SAME; conv 96 3x3 VALID + ReLU;
    max-pool 3x3/2 SAME; conv 128 3x3 SAME + ReLU; max-pool 3x3/2 SAME; flatten (3*3*128 = 1152);
    dense 512 + ReLU; dense 256 + ReLU; dense 10 logits. Sizes: ``channels=(64, 96, 128)``,
    ``dense=(512, 256)``. Conv and dense weights Glorot uniform with TF's fans (a conv's fan_in is
    kh*kw*in_channels, its fan_out kh*kw*out_channels). Biases 0. Max-pooling uses TensorFlow's
    SAME padding (:func:`same_padding`: the odd pixel goes at the end), padded with -inf.

The canonical parameter layout is PyTorch's ``state_dict``: Linear weight ``(out, in)``, Conv2d
weight ``(out, in, kh, kw)``, names ``conv1.weight, conv1.bias, ..., fc1.weight, fc1.bias, ...``.
fc1's input index follows the flatten of the feature map as PyTorch does it on NCHW, i.e. the order
``(C, H, W)``; for the MLP it follows the flatten of the 28x28x1 image (NHWC and NCHW agree, C=1).
The Flax models flatten NHWC as ``(H, W, C)``; ``jax_train.checkpoints`` permutes fc1 accordingly.

Draw order of :func:`init_params` (fixed; changing it changes every run): one
``np.random.default_rng(seed)``; layers in forward order (``conv1, conv2, conv3, fc1, fc2, ...``);
for each layer the whole weight is drawn in one call, in PyTorch layout, C order (truncated normal:
``standard_normal(shape)``, then the entries with ``|x| > 2`` are re-drawn with one
``standard_normal(count)`` call per round, in C order, until none is left, then scaled by the
stddev; Glorot: ``uniform(-limit, limit, shape)``). Biases are zeros and draw nothing.

This module imports NumPy only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# Dataset key (the ``-dataset`` flag) -> model name.
MODELS = {"mnist": "mnist_mlp", "cifar": "cifar10_3c3d"}
MODEL_NAMES = tuple(MODELS.values())

# Per-example input shape, NHWC without the batch dimension.
INPUT_SHAPES = {"mnist_mlp": (28, 28, 1), "cifar10_3c3d": (32, 32, 3)}

DEFAULT_SIZES = {
    "mnist_mlp": {"hidden": (1000, 500, 100), "num_classes": 10},
    "cifar10_3c3d": {"channels": (64, 96, 128), "dense": (512, 256), "num_classes": 10},
}

MLP_INIT_STDDEV = 0.03  # DeepOBS mnist_mlp: tf.truncated_normal_initializer(stddev=3e-2)

# cifar10_3c3d layer geometry: (kernel size, conv padding); every conv is followed by ReLU and a
# 3x3 stride-2 SAME max-pool.
CNN_CONVS = ((5, "VALID"), (3, "VALID"), (3, "SAME"))
POOL_WINDOW = 3
POOL_STRIDE = 2


def resolve_model(name: str) -> str:
    """Model name for a model name or a dataset key (``"mnist"`` -> ``"mnist_mlp"``)."""
    if name in MODEL_NAMES:
        return name
    if name in MODELS:
        return MODELS[name]
    raise ValueError(f"unknown model {name!r}: expected one of {sorted(MODEL_NAMES + tuple(MODELS))}")


def _int_tuple(name: str, value, length: int | None = None) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of positive ints, got {value!r}") from None
    if any(v < 1 for v in out) or any(int(v) != v for v in value):
        raise ValueError(f"{name} must be a sequence of positive ints, got {value!r}")
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have {length} entries, got {value!r}")
    return out


def model_sizes(model: str, **sizes) -> dict:
    """The model's full size settings: its defaults, overridden by the ``sizes`` that are not None.

    ``hidden`` belongs to ``mnist_mlp``; ``channels`` (exactly 3 entries) and ``dense`` (any number,
    possibly none) to ``cifar10_3c3d``; ``num_classes`` to both. A size that does not
    belong to the model is ignored (so a script can pass its ``-mlp_hidden``/``-cnn_*`` settings to
    either model); an unknown keyword raises ``TypeError``, a bad value ``ValueError``.
    """
    model = resolve_model(model)
    out = dict(DEFAULT_SIZES[model])
    known = {"hidden", "channels", "dense", "num_classes"}
    for key, value in sizes.items():
        if key not in known:
            raise TypeError(f"unknown model size {key!r}: expected some of {sorted(known)}")
        if value is not None and key in out:
            out[key] = value
    if model == "mnist_mlp":
        out["hidden"] = _int_tuple("hidden", out["hidden"])
    else:
        out["channels"] = _int_tuple("channels", out["channels"], length=len(CNN_CONVS))
        out["dense"] = _int_tuple("dense", out["dense"])
    (out["num_classes"],) = _int_tuple("num_classes", (out["num_classes"],))
    return out


def same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding of one spatial dimension: ``(before, after)``.

    Output size ``ceil(size / stride)``; total padding ``max((out - 1) * stride + window - size, 0)``,
    split with the odd pixel at the END (``before = total // 2``), as TF and ``jax.lax`` do.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2


def cnn_feature_shape(channels: Sequence[int] = (64, 96, 128), image_size: int = 32) -> tuple[int, int, int]:
    """``(C, H, W)`` of the cifar10_3c3d feature map fed to the flatten (``(128, 3, 3)`` by default)."""
    n = int(image_size)
    for kernel, padding in CNN_CONVS:
        if padding == "VALID":
            n = n - kernel + 1
        if n < 1:
            raise ValueError(f"image size {image_size} is too small for cifar10_3c3d")
        n = -(-n // POOL_STRIDE)
    return int(channels[-1]), n, n


def param_shapes(model: str, **sizes) -> dict[str, tuple[int, ...]]:
    """Names and shapes (PyTorch layout) of the model's parameters, in forward (= draw) order."""
    model = resolve_model(model)
    s = model_sizes(model, **sizes)
    shapes: dict[str, tuple[int, ...]] = {}
    if model == "mnist_mlp":
        widths = (math.prod(INPUT_SHAPES[model]), *s["hidden"], s["num_classes"])
    else:
        in_ch = INPUT_SHAPES[model][-1]
        for i, ((kernel, _), out_ch) in enumerate(zip(CNN_CONVS, s["channels"]), start=1):
            shapes[f"conv{i}.weight"] = (out_ch, in_ch, kernel, kernel)
            shapes[f"conv{i}.bias"] = (out_ch,)
            in_ch = out_ch
        widths = (math.prod(cnn_feature_shape(s["channels"], INPUT_SHAPES[model][0])), *s["dense"], s["num_classes"])
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:]), start=1):
        shapes[f"fc{i}.weight"] = (fan_out, fan_in)
        shapes[f"fc{i}.bias"] = (fan_out,)
    return shapes


def truncated_normal(rng: np.random.Generator, shape, stddev: float) -> np.ndarray:
    """Normal(0, stddev) truncated at 2 stddev by re-drawing, as TF's ``truncated_normal``."""
    x = rng.standard_normal(shape)
    bad = np.abs(x) > 2.0
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(x) > 2.0
    return x * stddev


def glorot_limit(shape: Sequence[int]) -> float:
    """Glorot-uniform bound for a PyTorch-layout weight, with TF's fans.

    Linear ``(out, in)``: fan_in = in, fan_out = out. Conv ``(out, in, kh, kw)``: the receptive field
    kh*kw times in / out channels (the same numbers TF computes from its ``(kh, kw, in, out)`` kernel).
    """
    receptive = math.prod(shape[2:])
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    return math.sqrt(6.0 / (fan_in + fan_out))


def init_params(
    model: str, seed: int, *, hidden=None, channels=None, dense=None, num_classes=None
) -> dict[str, np.ndarray]:
    """Initial weights of ``model`` (a model name or a dataset key) for ``seed``.

    Returns a dict in PyTorch ``state_dict`` names, order and layout, with float64 arrays (the
    caller casts). Sizes left as None take the model's defaults; see :func:`model_sizes`. The
    draw order is documented in the module docstring.
    """
    model = resolve_model(model)
    shapes = param_shapes(model, hidden=hidden, channels=channels, dense=dense, num_classes=num_classes)
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        if name.endswith(".bias"):
            params[name] = np.zeros(shape, dtype=np.float64)
        elif model == "mnist_mlp":
            params[name] = truncated_normal(rng, shape, MLP_INIT_STDDEV)
        else:
            limit = glorot_limit(shape)
            params[name] = rng.uniform(-limit, limit, shape)
    return params


def param_count(state_dict: Mapping) -> int:
    """Number of scalars in a state dict (NumPy arrays, tensors or anything with a shape)."""
    total = 0
    for value in state_dict.values():
        shape = value.shape if hasattr(value, "shape") else np.shape(value)
        total += math.prod(tuple(shape))
    return total
