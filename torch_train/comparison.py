"""The PyTorch engine of the comparison (``twinopt.comparison``): the same protocol, one run after
another, each as ``train_torch.py`` would train it (same initial weights, same batches, same
optimizer arithmetic), so its records match the JAX engine's (to 1e-9 in float64)."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

import torch_opt
from torch_train.models import build_model
from twinopt.comparison import parse_row


@contextlib.contextmanager
def precision(dtype: str):
    """torch's default dtype as the protocol's: torch.optim keeps scalar state (step counts,
    NAdam's mu_product) in it, as train_torch.py sets it. Restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class SequentialEngine:
    """Every group is one run."""

    backend = "torch"

    def __init__(self, problem):
        self.problem = problem

    def start(self, row: str, combos) -> TorchRun:
        return TorchRun(self.problem, row, *combos[0])


class TorchRun:
    """One run: its model and optimizer; batches arrive stacked for a group of one."""

    size, engine, compile_s = 1, "sequential", 0.0

    def __init__(self, problem, row: str, lr: float, seed: int):
        p = problem.protocol
        key, lookahead = parse_row(row)
        self.model = build_model(problem.model, seed, getattr(torch, p.dtype), **p.sizes)
        self.opt = torch_opt.OPTIMIZERS[key](self.model.parameters(), lr=lr, foreach=True)
        if lookahead:
            self.opt = torch_opt.Lookahead(self.opt, k=p.lookahead_k, alpha=p.lookahead_alpha, foreach=True)

    def train_step(self, x, y):
        x, y = torch.from_numpy(x[0]), torch.from_numpy(y[0])
        self.opt.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        self.opt.step()
        return loss.detach().reshape(1), (logits.argmax(1) == y).sum().reshape(1)

    @torch.no_grad()
    def eval_batch(self, x, y):
        logits, y = self.model(torch.from_numpy(x)), torch.from_numpy(y)
        return F.cross_entropy(logits, y, reduction="sum").reshape(1), (logits.argmax(1) == y).sum().reshape(1)
