"""The DeepOBS test-problem models in Flax NNX (see ``twinopt.models`` for the architectures).

Inputs are NHWC. Kernels are Flax's: Linear ``(in, out)``, Conv ``(kh, kw, in, out)``; the CNN
flattens its NHWC feature map as ``(H, W, C)``. ``build_model`` loads ``twinopt.models.init_params``
through ``jax_train.checkpoints``, so both backends start from the same weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from twinopt import models as spec


def max_pool_same(x: jax.Array, window: int = spec.POOL_WINDOW, stride: int = spec.POOL_STRIDE) -> jax.Array:
    """Max-pool an NHWC array with TensorFlow 'SAME' padding (odd pixel at the end, -inf padding).

    ``jax.lax`` computes SAME padding as TF does (``lax.padtype_to_pads``: before = total // 2).
    """
    return nnx.max_pool(x, window_shape=(window, window), strides=(stride, stride), padding="SAME")


class MLP(nnx.Module):
    """mnist_mlp: flatten -> (Linear -> ReLU) per hidden size -> Linear logits. Layers ``fc1 ... fcN``."""

    def __init__(self, hidden=(1000, 500, 100), num_classes=10, *, rngs: nnx.Rngs, dtype=jnp.float32):
        shapes = spec.param_shapes("mnist_mlp", hidden=hidden, num_classes=num_classes)
        self.num_layers = len(shapes) // 2
        for i in range(1, self.num_layers + 1):
            out_f, in_f = shapes[f"fc{i}.weight"]
            setattr(self, f"fc{i}", nnx.Linear(in_f, out_f, dtype=dtype, param_dtype=dtype, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)  # NHWC flatten (H, W, C)
        for i in range(1, self.num_layers):
            x = nnx.relu(getattr(self, f"fc{i}")(x))
        return getattr(self, f"fc{self.num_layers}")(x)


class CNN(nnx.Module):
    """cifar10_3c3d: 3 x (Conv -> ReLU -> 3x3/2 SAME max-pool), flatten (H, W, C), dense layers.

    Layers ``conv1, conv2, conv3, fc1 ... fcN`` (N = len(dense) + 1).
    """

    def __init__(self, channels=(64, 96, 128), dense=(512, 256), num_classes=10, *, rngs: nnx.Rngs,
                 dtype=jnp.float32):
        shapes = spec.param_shapes("cifar10_3c3d", channels=channels, dense=dense, num_classes=num_classes)
        self.num_convs = len(spec.CNN_CONVS)
        for i, (kernel, padding) in enumerate(spec.CNN_CONVS, start=1):
            out_c, in_c, _, _ = shapes[f"conv{i}.weight"]
            setattr(self, f"conv{i}", nnx.Conv(in_c, out_c, (kernel, kernel), padding=padding,
                                               dtype=dtype, param_dtype=dtype, rngs=rngs))
        self.num_dense = sum(1 for k in shapes if k.startswith("fc") and k.endswith(".weight"))
        for i in range(1, self.num_dense + 1):
            out_f, in_f = shapes[f"fc{i}.weight"]
            setattr(self, f"fc{i}", nnx.Linear(in_f, out_f, dtype=dtype, param_dtype=dtype, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(1, self.num_convs + 1):
            x = max_pool_same(nnx.relu(getattr(self, f"conv{i}")(x)))
        x = x.reshape(x.shape[0], -1)  # (H, W, C); checkpoints.py permutes fc1 from torch's (C, H, W)
        for i in range(1, self.num_dense):
            x = nnx.relu(getattr(self, f"fc{i}")(x))
        return getattr(self, f"fc{self.num_dense}")(x)


def build_model(model_name: str, seed: int, dtype=jnp.float32, **sizes) -> MLP | CNN:
    """The model ``model_name`` (a model name or a dataset key) with ``init_params(model_name, seed)``.

    ``sizes``: ``hidden`` (MLP), ``channels``/``dense`` (CNN), ``num_classes``; None means default.
    Params (and the computation) are in ``dtype``; float64 needs ``jax_enable_x64``.
    """
    from jax_train.checkpoints import load_torch_state_dict

    if jnp.dtype(dtype).itemsize > 4 and not jax.config.jax_enable_x64:
        raise ValueError(f"dtype {jnp.dtype(dtype).name} needs jax.config.update('jax_enable_x64', True)")
    name = spec.resolve_model(model_name)
    full = spec.model_sizes(name, **sizes)
    cls = MLP if name == "mnist_mlp" else CNN
    # An abstract model (shapes only): Flax's own initializers never run (they would compile once per
    # shape, seconds each); load_torch_state_dict sets every param.
    model = nnx.eval_shape(lambda: cls(**full, rngs=nnx.Rngs(0), dtype=dtype))
    load_torch_state_dict(model, spec.init_params(name, seed, **full))
    return model
