r"""Adagrad (Duchi, Hazan & Singer, 2011), the arithmetic of torch.optim.Adagrad.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    s   <- initial_accumulator_value              (at the first step, before the update)
    g   <- g + weight_decay * p                   (L2 penalty, only if weight_decay != 0)
    clr <- lr / (1 + (t - 1) * lr_decay)
    s   <- s + g * g
    p   <- p - clr * g / (sqrt(s) + eps)

Paper: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
Stochastic Optimization", JMLR 12, 2011.
Reference: ``torch.optim.Adagrad`` (reproduced to 1e-12 relative in float64, see parity_tests),
with one deliberate difference: torch.optim fills every accumulator with the constructor's
``initial_accumulator_value`` and ignores a value given in a param group; here each group's
own value is used (the same result whenever the groups do not override it).
``optax.adagrad`` differs: it puts eps inside the root (``g / sqrt(s + eps)``, and 0 where
``s = 0``), defaults to ``initial_accumulator_value=0.1`` and ``eps=1e-7``, and has no
``lr_decay`` and no weight decay. No setting reproduces it exactly; with ``eps=0`` on both
sides and ``initial_accumulator_value > 0`` the two agree up to rounding. Same arithmetic as
``jax_opt.adagrad``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_nonneg

from ._base import Optimizer, blocks, fused_groups, new_step


class Adagrad(Optimizer):
    """Adagrad with torch's ``lr_decay`` (``lr / (1 + (t - 1) lr_decay)``) and L2 decay."""

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, *, foreach=None, maximize=False, fused=None, capturable=False, differentiable=False):
        check_nonneg("lr", lr)
        check_nonneg("lr_decay", lr_decay)
        check_nonneg("weight_decay", weight_decay)
        check_nonneg("initial_accumulator_value", initial_accumulator_value)
        check_nonneg("eps", eps)
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, fused=fused)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _init_state(self, p, group):
        return {"step": new_step(p.device if group["fused"] else None),
                "sum": torch.full_like(p, group["initial_accumulator_value"])}

    def _update(self, group, params, grads, states, foreach):
        adagrad(
            params, grads,
            [s["sum"] for s in states],
            [s["step"] for s in states],
            foreach=foreach, fused=group["fused"], lr=group["lr"], lr_decay=group["lr_decay"],
            weight_decay=group["weight_decay"], eps=group["eps"],
        )


def adagrad(params, grads, state_sums, steps, *, foreach, lr, lr_decay, weight_decay, eps, fused=False):
    """Functional Adagrad step."""
    fn = _fused_adagrad if fused else _multi_tensor_adagrad if foreach else _single_tensor_adagrad
    fn(params, grads, state_sums, steps, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)


def _single_tensor_adagrad(params, grads, state_sums, steps, *, lr, lr_decay, weight_decay, eps):
    for param, grad, state_sum, step_t in zip(params, grads, state_sums, steps):
        step_t += 1
        clr = lr / (1 + (step_t.item() - 1) * lr_decay)
        for p, g, s in blocks(param, grad, state_sum):
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            s.addcmul_(g, g, value=1)
            std = s.sqrt().add_(eps)
            p.addcdiv_(g, std, value=-clr)


def _multi_tensor_adagrad(params, grads, state_sums, steps, *, lr, lr_decay, weight_decay, eps):
    torch._foreach_add_(steps, 1)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    minus_clr = [-lr / (1 + (s.item() - 1) * lr_decay) for s in steps]
    torch._foreach_addcmul_(state_sums, grads, grads, value=1)
    std = torch._foreach_sqrt(state_sums)
    torch._foreach_add_(std, eps)
    numerator = torch._foreach_mul(grads, minus_clr)
    torch._foreach_addcdiv_(params, numerator, std)


def _fused_adagrad(params, grads, state_sums, steps, *, lr, lr_decay, weight_decay, eps):
    torch._foreach_add_(steps, 1)
    for p, g, state_sum, s in fused_groups(params, grads, state_sums, steps):
        torch._fused_adagrad_(p, g, state_sum, s, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                              maximize=False)
