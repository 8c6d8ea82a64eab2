"""PyTorch side of ``bench.py``: torch_opt's step paths against torch.optim and the third-party
implementations (torch-optimizer, pytorch_optimizer) where torch.optim lacks the algorithm."""

from __future__ import annotations

import functools
import importlib
import inspect

import torch

import torch_opt
from torch_train.models import build_model
from twinopt import benchmarks, data, registry
from twinopt.models import MODELS
from twinopt.registry import LOOKAHEAD_ALPHA, LOOKAHEAD_K, split_row

LR = 1e-3


def load(target):
    """The class at dotted path ``target``, or None where its library is not installed
    (``pip install -e '.[bench]'`` installs the peers)."""
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


def step_paths(cls):
    """The step paths a class offers, as keyword arguments: per-tensor, foreach, and fused if it has it."""
    paths = {"per-tensor": {"foreach": False}, "foreach": {"foreach": True}}
    if "fused" in inspect.signature(cls).parameters:
        paths["fused"] = {"fused": True}
    return paths


def reference_paths(info):
    """``[(name, make(params) -> optimizer, rtol)]``: torch.optim's class on each of its paths, where
    it is the key's reference."""
    if not info.torch_reference:
        return []
    cls = load(info.reference)
    rtol = registry.TOLERANCE["float64"]
    return [(f"torch.optim {name}", functools.partial(cls, lr=LR, **info.presets, **path), rtol)
            for name, path in step_paths(cls).items()]


def third_party(info):
    """The registry's other PyTorch implementations of the key, on each of their paths; those
    whose library is not installed are left out."""
    out = []
    for peer in info.peers_of("torch"):
        cls = load(peer.target)
        for foreach in ((False, True) if peer.foreach else (None,)) if cls else ():
            path = {} if foreach is None else {"foreach": foreach}
            out.append((f"{peer.label}{' foreach' if foreach else ''}",
                        functools.partial(cls, lr=LR, **peer.kwargs, **path), peer.rtol))
    return out


def implementations(row):
    """``[(kind, name, make(params) -> optimizer, rtol)]`` for one benchmark row: ours ("ours") on
    every path, then the peers ("peer", with the agreement the tests show; None: another
    algorithm). Lookahead rows wrap each side's fastest inner path."""
    key, lookahead = split_row(row)
    info = registry.INFO[key]
    cls = torch_opt.OPTIMIZERS[key]
    ours = [(name, functools.partial(cls, lr=LR, **path)) for name, path in step_paths(cls).items()]
    if not lookahead:
        peers = reference_paths(info) + third_party(info)
        return [("ours", n, f, None) for n, f in ours] + [("peer", *peer) for peer in peers]
    fastest_ours = ours[-1]  # fused if the class has it, else foreach
    fastest_inner = reference_paths(info)[-1]

    def wrap_ours(params):
        return torch_opt.Lookahead(fastest_ours[1](params), k=LOOKAHEAD_K, alpha=LOOKAHEAD_ALPHA, foreach=True)

    out = [("ours", f"Lookahead(foreach) of {fastest_ours[0]}", wrap_ours, None)]
    for peer in registry.LOOKAHEAD_PEERS:
        wrapper = load(peer.target) if peer.library != "optax" else None
        if wrapper:
            out.append(("peer", f"{peer.label} Lookahead of {fastest_inner[0]}",
                        lambda params, wrapper=wrapper: wrapper(fastest_inner[1](params), k=LOOKAHEAD_K,
                                                                alpha=LOOKAHEAD_ALPHA), peer.rtol))
    return out


def make_params(shapes, seed=0):
    """float32 params with gradients of a realistic size (1e-3 times the weights)."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    return params


def time_row(row, shapes, **timing):
    """``[(kind, impl, seconds per step, error)]`` for every implementation of ``row`` on ``shapes``,
    each with its own params and state, timed in turn (``benchmarks.interleaved_medians``); one
    whose step raises has seconds ``None`` and the error."""
    impls = implementations(row)
    steps, errors = benchmarks.runnable({(kind, name): make(make_params(shapes)).step for kind, name, make, _ in impls})
    medians = benchmarks.interleaved_medians(steps, **timing)
    return [(kind, name, medians.get((kind, name)), errors.get((kind, name))) for kind, name, _, _ in impls]


def triad_seconds(n, budget_s):
    a, b, c = torch.empty(n), torch.rand(n), torch.rand(n)
    return benchmarks.median_time(lambda: torch.add(b, c, alpha=3.0, out=a), budget_s=budget_s)


def matmul_gflops(n=2048):
    """float32 GFLOP/s of an n x n matmul: the machine's compute throughput for the training table."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    return 2 * n**3 / benchmarks.median_time(lambda: a @ b) / 1e9


def conv_gflops():
    c = benchmarks.CONV
    x = torch.rand(c["batch"], c["in_channels"], c["size"], c["size"])
    w = torch.rand(c["out_channels"], c["in_channels"], c["kernel"], c["kernel"])
    return benchmarks.conv_flops() / benchmarks.median_time(lambda: torch.nn.functional.conv2d(x, w)) / 1e9


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
    return benchmarks.timed_loop(batches, step)
