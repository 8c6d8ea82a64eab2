r"""Adamax (Kingma & Ba, 2015, Section 7.1), the arithmetic of torch.optim.Adamax.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    g   <- g + weight_decay * p                   (L2 penalty, only if weight_decay != 0)
    m   <- m + (1 - b1) * (g - m)                  (lerp, as torch.optim)
    u   <- max(b2 * u, |g| + eps)                  (exponentially weighted infinity norm)
    p   <- p - lr / (1 - b1^t) * m / u

Paper: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, Algorithm 2
(which has no eps: ``u <- max(b2 * u, |g|)``; torch adds eps to ``|g|`` inside the max, so
``u >= eps`` and the division is safe even for a gradient that has always been zero).
Reference: ``torch.optim.Adamax`` (reproduced to 1e-12 relative in float64, see parity_tests).
``optax.adamax`` (0.2.8) places eps exactly as here, ``u <- max(|g| + eps, b2 * u)``, and
computes ``(m / (1 - b1^t)) / u``: the same step up to rounding, so ``jax_opt.adamax`` with
``weight_decay=0`` reproduces it (optax has no L2 decay in ``adamax``; ``optax.adamaxw``
decays decoupled instead). Same arithmetic as ``jax_opt.adamax``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_betas, check_nonneg

from ._base import Optimizer, blocks, new_step


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm in place of the second moment; L2 weight decay."""

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False):
        check_nonneg("lr", lr)
        check_betas("betas", betas, length=2)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _init_state(self, p, group):
        return {"step": new_step(), "exp_avg": torch.zeros_like(p), "exp_inf": torch.zeros_like(p)}

    def _update(self, group, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        adamax(
            params, grads,
            [s["exp_avg"] for s in states],
            [s["exp_inf"] for s in states],
            [s["step"] for s in states],
            foreach=foreach, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
            weight_decay=group["weight_decay"],
        )


def adamax(params, grads, exp_avgs, exp_infs, steps, *, foreach, lr, beta1, beta2, eps, weight_decay):
    """Functional Adamax step."""
    fn = _multi_tensor_adamax if foreach else _single_tensor_adamax
    fn(params, grads, exp_avgs, exp_infs, steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
       weight_decay=weight_decay)


def _single_tensor_adamax(params, grads, exp_avgs, exp_infs, steps, *, lr, beta1, beta2, eps,
                          weight_decay):
    for param, grad, exp_avg, exp_inf, step_t in zip(params, grads, exp_avgs, exp_infs, steps):
        step_t += 1
        step_size = -lr / (1 - beta1**step_t.item())
        for p, g, m, u in blocks(param, grad, exp_avg, exp_inf):
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            m.lerp_(g, 1 - beta1)
            torch.maximum(u.mul_(beta2), g.abs().add_(eps), out=u)
            p.addcdiv_(m, u, value=step_size)


def _multi_tensor_adamax(params, grads, exp_avgs, exp_infs, steps, *, lr, beta1, beta2, eps,
                         weight_decay):
    torch._foreach_add_(steps, 1)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_infs, beta2)
    # A new list: the signed gradients may be the caller's p.grad, which must stay untouched.
    norms = torch._foreach_abs(grads)
    torch._foreach_add_(norms, eps)
    torch._foreach_maximum_(exp_infs, norms)
    torch._foreach_addcdiv_(params, exp_avgs, exp_infs, [-lr / (1 - beta1**s.item()) for s in steps])
