r"""Adadelta (Zeiler, 2012), the arithmetic of torch.optim.Adadelta.

For each parameter :math:`p` with gradient :math:`g`::

    g   <- g + weight_decay * p                    (L2 penalty, only if weight_decay != 0)
    v   <- rho * v + (1 - rho) * g * g              (square_avg)
    d   <- sqrt(u + eps) / sqrt(v + eps) * g        (u: acc_delta, before this step)
    u   <- rho * u + (1 - rho) * d * d
    p   <- p - lr * d

Paper: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", arXiv:1212.5701, 2012
(Algorithm 1; ``lr = 1`` is the paper's method).
Reference: ``torch.optim.Adadelta`` (reproduced to 1e-12 relative in float64, see parity_tests).
``optax.adadelta(learning_rate, rho, eps, weight_decay)`` has the same arithmetic (up to
rounding) and the same rho and eps defaults; its ``learning_rate`` defaults to None, which
skips the learning-rate step and with it the sign flip, so its default update is ``+d``:
pass ``learning_rate=1.0`` to get ours. Same arithmetic as ``jax_opt.adadelta``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_nonneg, check_range

from ._base import Optimizer, blocks, new_step


class Adadelta(Optimizer):
    """Adadelta with a learning rate (default 1.0, the paper's method) and L2 decay."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, *, foreach=None,
                 maximize=False, capturable=False, differentiable=False):
        check_nonneg("lr", lr)
        check_range("rho", rho, 0.0, 1.0)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _init_state(self, p, group):
        return {"step": new_step(), "square_avg": torch.zeros_like(p), "acc_delta": torch.zeros_like(p)}

    def _update(self, group, params, grads, states, foreach):
        adadelta(
            params, grads,
            [s["square_avg"] for s in states],
            [s["acc_delta"] for s in states],
            [s["step"] for s in states],
            foreach=foreach, lr=group["lr"], rho=group["rho"], eps=group["eps"],
            weight_decay=group["weight_decay"],
        )


def adadelta(params, grads, square_avgs, acc_deltas, steps, *, foreach, lr, rho, eps, weight_decay):
    """Functional Adadelta step."""
    fn = _multi_tensor_adadelta if foreach else _single_tensor_adadelta
    fn(params, grads, square_avgs, acc_deltas, steps, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)


def _single_tensor_adadelta(params, grads, square_avgs, acc_deltas, steps, *, lr, rho, eps,
                            weight_decay):
    for param, grad, square_avg, acc_delta, step_t in zip(params, grads, square_avgs, acc_deltas, steps):
        step_t += 1
        for p, g, sq, acc in blocks(param, grad, square_avg, acc_delta):
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            sq.mul_(rho).addcmul_(g, g, value=1 - rho)
            std = sq.add(eps).sqrt_()
            delta = acc.add(eps).sqrt_().div_(std).mul_(g)
            acc.mul_(rho).addcmul_(delta, delta, value=1 - rho)
            p.add_(delta, alpha=-lr)


def _multi_tensor_adadelta(params, grads, square_avgs, acc_deltas, steps, *, lr, rho, eps,
                           weight_decay):
    torch._foreach_add_(steps, 1)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(square_avgs, rho)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - rho)
    std = torch._foreach_add(square_avgs, eps)
    torch._foreach_sqrt_(std)
    deltas = torch._foreach_add(acc_deltas, eps)
    torch._foreach_sqrt_(deltas)
    torch._foreach_div_(deltas, std)
    torch._foreach_mul_(deltas, grads)
    torch._foreach_mul_(acc_deltas, rho)
    torch._foreach_addcmul_(acc_deltas, deltas, deltas, value=1 - rho)
    torch._foreach_add_(params, deltas, alpha=-lr)
