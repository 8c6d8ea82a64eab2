"""The DeepOBS test-problem models in PyTorch (see ``twinopt.models`` for the architectures).

Inputs are NHWC float tensors, as the shared data layer yields them; the CNN permutes to NCHW
internally. Parameter names and layouts are those of ``twinopt.models.init_params``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from twinopt import models as spec


def max_pool_same(x: torch.Tensor, window: int = spec.POOL_WINDOW, stride: int = spec.POOL_STRIDE) -> torch.Tensor:
    """Max-pool an NCHW tensor with TensorFlow 'SAME' padding (odd pixel at the end, padded with -inf)."""
    top, bottom = spec.same_padding(x.shape[-2], window, stride)
    left, right = spec.same_padding(x.shape[-1], window, stride)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, window, stride)


class MLP(nn.Module):
    """mnist_mlp: flatten -> (Linear -> ReLU) per hidden size -> Linear logits. Layers ``fc1 ... fcN``."""

    def __init__(self, hidden=(1000, 500, 100), num_classes=10):
        super().__init__()
        shapes = spec.param_shapes("mnist_mlp", hidden=hidden, num_classes=num_classes)
        self.num_layers = len(shapes) // 2
        for i in range(1, self.num_layers + 1):
            out_f, in_f = shapes[f"fc{i}.weight"]
            setattr(self, f"fc{i}", nn.Linear(in_f, out_f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)  # NHWC (H, W, C) flatten; C = 1, so the same as NCHW
        for i in range(1, self.num_layers):
            x = F.relu(getattr(self, f"fc{i}")(x))
        return getattr(self, f"fc{self.num_layers}")(x)


class CNN(nn.Module):
    """cifar10_3c3d: 3 x (Conv -> ReLU -> 3x3/2 SAME max-pool), flatten (C, H, W), dense layers.

    Layers ``conv1, conv2, conv3, fc1 ... fcN`` (N = len(dense) + 1).
    """

    def __init__(self, channels=(64, 96, 128), dense=(512, 256), num_classes=10):
        super().__init__()
        shapes = spec.param_shapes("cifar10_3c3d", channels=channels, dense=dense, num_classes=num_classes)
        for i, (kernel, padding) in enumerate(spec.CNN_CONVS, start=1):
            out_c, in_c, _, _ = shapes[f"conv{i}.weight"]
            setattr(self, f"conv{i}", nn.Conv2d(in_c, out_c, kernel, padding=0 if padding == "VALID" else kernel // 2))
        self.num_convs = len(spec.CNN_CONVS)
        self.num_dense = sum(1 for k in shapes if k.startswith("fc") and k.endswith(".weight"))
        for i in range(1, self.num_dense + 1):
            out_f, in_f = shapes[f"fc{i}.weight"]
            setattr(self, f"fc{i}", nn.Linear(in_f, out_f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 3, 1, 2)  # NHWC -> NCHW
        for i in range(1, self.num_convs + 1):
            x = max_pool_same(F.relu(getattr(self, f"conv{i}")(x)))
        x = x.flatten(1)  # (C, H, W): the canonical fc1 input order
        for i in range(1, self.num_dense):
            x = F.relu(getattr(self, f"fc{i}")(x))
        return getattr(self, f"fc{self.num_dense}")(x)


def build_model(model_name: str, seed: int, dtype: torch.dtype = torch.float32, device=None, **sizes) -> nn.Module:
    """The model ``model_name`` (a model name or a dataset key) with ``init_params(model_name, seed)``.

    ``sizes``: ``hidden`` (MLP), ``channels``/``dense`` (CNN), ``num_classes``; None means default.
    The modules are built on the meta device and the weights assigned, so building draws nothing
    from torch's global generator.
    """
    name = spec.resolve_model(model_name)
    full = spec.model_sizes(name, **sizes)
    cls = MLP if name == "mnist_mlp" else CNN
    with torch.device("meta"):
        model = cls(**full)
    params = spec.init_params(name, seed, **full)
    state = {k: torch.tensor(v, dtype=dtype, device=device) for k, v in params.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model
