"""Weights between the Flax NNX models and PyTorch ``state_dict`` layout (NumPy arrays).

- Linear: Flax kernel ``(in, out)`` <-> torch weight ``(out, in)`` (transpose).
- Conv: Flax kernel ``(kh, kw, in, out)`` <-> torch weight ``(out, in, kh, kw)``.
- The CNN's fc1: torch flattens the feature map as ``(C, H, W)``, Flax as ``(H, W, C)``; the input
  dimension of fc1 is permuted accordingly (C = the last conv's output channels, H = W =
  sqrt(fc1 inputs / C)). The MLP's fc1 needs nothing: its image has C = 1.
- Biases are copied unchanged.

Conversions are exact (transposes and reshapes only). Imports jax/flax/numpy, never torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

_LAYER = re.compile(r"(conv|fc)(\d+)")


def _layers(model: nnx.Module) -> list[tuple[str, nnx.Module]]:
    """``(name, layer)`` for the model's conv*/fc* layers, in forward (= torch state_dict) order."""
    found = []
    for name, value in vars(model).items():
        m = _LAYER.fullmatch(name)
        if m and isinstance(value, (nnx.Linear, nnx.Conv)):
            found.append(((m.group(1) != "conv", int(m.group(2))), name, value))
    if not found:
        raise TypeError(f"{type(model).__name__} has no conv*/fc* layers to convert")
    return [(name, layer) for _, name, layer in sorted(found, key=lambda t: t[0])]


def _fc1_chw(model: nnx.Module, layers) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the feature map flattened into fc1, or None when fc1 reads no conv output."""
    convs = [layer for name, layer in layers if name.startswith("conv")]
    if not convs or not hasattr(model, "fc1"):
        return None
    channels = convs[-1].out_features
    hw, rest = divmod(model.fc1.in_features, channels)
    side = math.isqrt(hw)
    if rest or side * side != hw:
        raise ValueError(f"fc1 has {model.fc1.in_features} inputs: not a square map of {channels} channels")
    return channels, side, side


def _torch_shape(name: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(flax_shape) == 1:
        return flax_shape
    if len(flax_shape) == 2:
        return flax_shape[::-1]
    kh, kw, cin, cout = flax_shape
    return cout, cin, kh, kw


def _to_torch(name: str, kind: str, value: np.ndarray, chw) -> np.ndarray:
    if kind == "bias":
        return value
    if value.ndim == 4:  # (kh, kw, in, out) -> (out, in, kh, kw)
        return value.transpose(3, 2, 0, 1)
    if name == "fc1" and chw is not None:  # rows (H, W, C) -> (C, H, W)
        c, h, w = chw
        value = value.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
    return value.T


def _from_torch(name: str, kind: str, value: np.ndarray, chw) -> np.ndarray:
    if kind == "bias":
        return value
    if value.ndim == 4:  # (out, in, kh, kw) -> (kh, kw, in, out)
        return value.transpose(2, 3, 1, 0)
    value = value.T  # (in, out)
    if name == "fc1" and chw is not None:  # rows (C, H, W) -> (H, W, C)
        c, h, w = chw
        value = value.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(c * h * w, -1)
    return value


def to_torch_state_dict(model: nnx.Module, params=None) -> dict[str, np.ndarray]:
    """The model's params as a PyTorch ``state_dict`` of NumPy arrays (names, order and layout).

    ``params``: optionally a tree shaped like the model's ``nnx.state(model, nnx.Param)`` (an
    ``nnx.State`` or its ``nnx.to_pure_dict``), e.g. the gradients from ``nnx.grad`` or a functional
    training loop's params, converted instead of the model's own values. Arrays keep their dtype.
    """
    layers = _layers(model)
    chw = _fc1_chw(model, layers)
    if params is None:
        tree = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    elif isinstance(params, nnx.State):
        tree = nnx.to_pure_dict(params)
    else:
        tree = params
    out = {}
    for name, _ in layers:
        for kind in ("weight", "bias"):
            value = tree[name]["kernel" if kind == "weight" else "bias"]
            value = value.get_value() if isinstance(value, nnx.Variable) else value
            out[f"{name}.{kind}"] = np.array(_to_torch(name, kind, np.asarray(value), chw))  # own C-order copy
    return out


def load_torch_state_dict(model: nnx.Module, state_dict: Mapping) -> None:
    """Set the model's params, in place, from a PyTorch-layout state dict.

    Values: NumPy arrays, tensors (detached and moved to the CPU by duck typing) or anything
    ``np.asarray`` accepts; they are cast to the model's param dtype. Everything is checked before
    anything is set: missing or unexpected keys, or a shape that does not match the model, raise
    ``ValueError`` naming the entry and the expected and found shapes.
    """
    layers = _layers(model)
    chw = _fc1_chw(model, layers)
    targets = {}
    for name, layer in layers:
        targets[f"{name}.weight"] = (name, "weight", layer.kernel)
        targets[f"{name}.bias"] = (name, "bias", layer.bias)
    missing = [k for k in targets if k not in state_dict]
    unexpected = [k for k in state_dict if k not in targets]
    if missing or unexpected:
        raise ValueError(
            f"state_dict does not match {type(model).__name__}: missing keys {missing}, unexpected keys {unexpected}"
        )
    converted = []
    for key, (name, kind, var) in targets.items():
        value = state_dict[key]
        if hasattr(value, "detach"):  # a torch tensor, without importing torch
            value = value.detach().cpu()
        value = np.asarray(value)
        expected = _torch_shape(name, tuple(var.get_value().shape))
        if tuple(value.shape) != expected:
            raise ValueError(
                f"{key}: expected {expected}, got {tuple(value.shape)}: a state_dict of another model size?"
            )
        converted.append((var, _from_torch(name, kind, value, chw)))
    for var, value in converted:  # get/set_value: works on abstract (nnx.eval_shape) models too
        var.set_value(jnp.asarray(value, dtype=var.get_value().dtype))
