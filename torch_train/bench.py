"""PyTorch side of ``bench.py``: torch_opt's step paths against torch.optim and the third-party
implementations (torch-optimizer, pytorch_optimizer) where torch.optim lacks the algorithm."""

from __future__ import annotations

import functools
import inspect

import torch

import torch_opt
from torch_train.models import build_model
from twinopt import bench, data
from twinopt.hparams import KEY_PRESETS, LOOKAHEAD_ALPHA, LOOKAHEAD_K, split_row
from twinopt.models import MODELS

# The torch.optim class of each key it has, with the key's presets.
TORCH_OPTIM = {
    "sgd": torch.optim.SGD, "momentum": torch.optim.SGD, "nesterov": torch.optim.SGD, "adagrad": torch.optim.Adagrad,
    "adadelta": torch.optim.Adadelta, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam,
    "amsgrad": torch.optim.Adam, "adamax": torch.optim.Adamax, "adamw": torch.optim.AdamW,
    "nadam": torch.optim.NAdam, "radam": torch.optim.RAdam,
}
LR = 1e-3


def _paths(cls):
    """The step paths a class offers, as keyword arguments: per-tensor, foreach, and fused if it has it."""
    paths = {"per-tensor": {"foreach": False}, "foreach": {"foreach": True}}
    if "fused" in inspect.signature(cls).parameters:
        paths["fused"] = {"fused": True}
    return paths


def _third_party(key):
    """(name, factory) of the popular implementations outside torch.optim; libraries not
    installed are left out (``pip install -e '.[bench]'`` installs them)."""
    out = []
    try:
        import torch_optimizer
        if key in ("adabound", "amsbound"):
            out.append(("torch-optimizer", functools.partial(torch_optimizer.AdaBound, lr=LR,
                                                             amsbound=key == "amsbound")))
        elif key == "aggmo":
            out.append(("torch-optimizer", functools.partial(torch_optimizer.AggMo, lr=LR)))
    except ImportError:
        pass
    try:
        import pytorch_optimizer
        for foreach in (False, True):
            name = f"pytorch_optimizer{' foreach' if foreach else ''}"
            if key in ("adabound", "amsbound"):
                out.append((name, functools.partial(pytorch_optimizer.AdaBound, lr=LR, ams_bound=key == "amsbound",
                                                    foreach=foreach)))
            elif key == "aggmo":
                out.append((name, functools.partial(pytorch_optimizer.AggMo, lr=LR, foreach=foreach)))
    except ImportError:
        pass
    return out


def _lookahead_peers():
    out = []
    try:
        import torch_optimizer
        out.append(("torch-optimizer",
                    lambda inner: torch_optimizer.Lookahead(inner, k=LOOKAHEAD_K, alpha=LOOKAHEAD_ALPHA)))
    except ImportError:
        pass
    try:
        import pytorch_optimizer
        out.append(("pytorch_optimizer",
                    lambda inner: pytorch_optimizer.Lookahead(inner, k=LOOKAHEAD_K, alpha=LOOKAHEAD_ALPHA)))
    except ImportError:
        pass
    return out


def implementations(row):
    """``[(kind, name, make(params) -> optimizer)]`` for one benchmark row: ours ("ours") on every
    path, then the peers ("peer"). Lookahead rows wrap each side's fastest inner path."""
    key, lookahead = split_row(row)
    ours_cls = functools.partial(torch_opt.OPTIMIZERS[key], lr=LR)
    ours = [(name, functools.partial(ours_cls, **path)) for name, path in _paths(torch_opt.OPTIMIZERS[key]).items()]
    peers = []
    if key in TORCH_OPTIM:
        cls = TORCH_OPTIM[key]
        peers = [(f"torch.optim {name}", functools.partial(cls, lr=LR, **KEY_PRESETS.get(key, {}), **path))
                 for name, path in _paths(cls).items()]
    peers += _third_party(key)
    if not lookahead:
        return [("ours", n, f) for n, f in ours] + [("peer", n, f) for n, f in peers]
    fastest_ours = ours[-1]  # fused if the class has it, else foreach
    fastest_inner = peers[-1] if key in TORCH_OPTIM else None

    def wrap_ours(params):
        return torch_opt.Lookahead(fastest_ours[1](params), k=LOOKAHEAD_K, alpha=LOOKAHEAD_ALPHA,
                                   foreach=True)

    out = [("ours", f"Lookahead(foreach) of {fastest_ours[0]}", wrap_ours)]
    for name, wrapper in _lookahead_peers():
        out.append(("peer", f"{name} Lookahead of {fastest_inner[0]}",
                    lambda params, wrapper=wrapper: wrapper(fastest_inner[1](params))))
    return out


def make_params(shapes, seed=0):
    """float32 params with gradients of a realistic size (1e-3 times the weights)."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    return params


def time_row(row, shapes, **timing):
    """``[(kind, impl, seconds per step)]`` for every implementation of ``row`` on ``shapes``, each
    with its own params and state, timed in turn (``bench.interleaved_medians``)."""
    impls = implementations(row)
    steps = {(kind, name): make(make_params(shapes)).step for kind, name, make in impls}
    medians = bench.interleaved_medians(steps, **timing)
    return [(kind, name, medians[kind, name]) for kind, name, _ in impls]


def triad_seconds(n, budget_s):
    a, b, c = torch.empty(n), torch.rand(n), torch.rand(n)
    return bench.median_time(lambda: torch.add(b, c, alpha=3.0, out=a), budget_s=budget_s)


def matmul_gflops(n=2048):
    """float32 GFLOP/s of an n x n matmul: the machine's compute throughput for the training table."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    return 2 * n**3 / bench.median_time(lambda: a @ b) / 1e9


def conv_gflops():
    c = bench.CONV
    x = torch.rand(c["batch"], c["in_channels"], c["size"], c["size"])
    w = torch.rand(c["out_channels"], c["in_channels"], c["kernel"], c["kernel"])
    return bench.conv_flops() / bench.median_time(lambda: torch.nn.functional.conv2d(x, w)) / 1e9


def textbook_samples_per_s(ds, dataset, batch_size):
    """A tutorial's loop: each batch copied into new tensors, torch.optim.Adam's default
    (per-tensor) step, the loss read every step."""
    model = build_model(MODELS[dataset], seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(x, y):
        x, y = torch.tensor(x), torch.tensor(y)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        loss.item()

    batches = data.train_batches(ds.x_train, ds.y_train, batch_size, epoch=1, seed=0, augment=dataset == "cifar")
    return bench.timed_loop(batches, step)
