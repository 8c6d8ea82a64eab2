r"""AdEMAMix (Pagliardini, Ablin & Grangier, 2024), the arithmetic of the official code.

Adam whose numerator adds a second, slow EMA of the gradient (decay beta3, not bias-corrected),
weighted by alpha: it keeps gradients of ~1/(1 - beta3) steps ago in play. For each parameter
:math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`::

    a   <- alpha * t / alpha_warmup if t < alpha_warmup, else alpha       (if alpha_warmup is set)
    b3  <- f^-1((1 - t / T) f(b1) + t / T f(beta3)) if t < T, else beta3  (if T = beta3_warmup is set;
           f(b) = ln 0.5 / ln(b + 1e-8) - 1, the half-life minus 1, f^-1(x) = 0.5^(1 / (x + 1)))
    m1  <- b1 * m1 + (1 - b1) * g
    m2  <- b3 * m2 + (1 - b3) * g
    v   <- b2 * v + (1 - b2) * g * g
    d   <- sqrt(v) / sqrt(1 - b2^t) + eps
    u   <- (m1 / (1 - b1^t) + a * m2) / d + weight_decay * p
    p   <- p - lr * u

Paper: Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
arXiv:2409.03137 (2024). Reference: apple/ml-ademamix ``pytorch/ademamix.py`` at commit c3d73c0
(2024-11-14; ``parity_tests/reference.py`` transcribes it); the warmups are
``twinopt.schedules.ademamix_alpha`` / ``ademamix_beta3``, its two schedulers. torch.optim has no
AdEMAMix. Differences from the official code: the fast EMA is kept (and updated, exactly to g)
when b1 = 0, where the official code uses g itself and allocates nothing; the step count is a
tensor, as in torch.optim (an official state dict's integer steps are converted on loading);
a warmup must be > 0; there are a multi-tensor path and ``maximize``. The per-tensor path rounds
as the official class (the same float64 trajectory bit for bit, measured on the parity problem
with warmups and decay); the foreach path differs from it by rounding (4e-16).

``pytorch_optimizer.AdEMAMix`` (alpha 5 by default, L2 decay unless ``weight_decouple=True``)
computes these steps with ``alpha=2.0, weight_decouple=True``; its one warmup
``t_alpha_beta3`` leaves out the 1e-8 of ``f``. Same arithmetic as ``jax_opt.ademamix``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from twinopt.hparams import check_betas, check_nonneg, check_range
from twinopt.schedules import ademamix_alpha, ademamix_beta3

from ._base import Optimizer, blocks, new_step


class AdEMAMix(Optimizer):
    """AdEMAMix: Adam plus ``alpha`` times a slow EMA of the gradient; decay as AdamW.

    Args:
      params: the parameters, or param groups (dicts) with their own hyperparameters.
      lr: the learning rate, >= 0 (default 1e-3).
      betas: ``(b1, b2, beta3)``, each in [0, 1) (default ``(0.9, 0.999, 0.9999)``): the decays of
        the fast EMA, the second moment and the slow EMA.
      alpha: the weight of the slow EMA, >= 0 (default 2.0, the official code's; optax's is 5.0).
      beta3_warmup: steps over which beta3 rises from b1 to beta3 (linearly in the half-life),
        > 0, or None: no warmup (default).
      alpha_warmup: steps over which alpha rises linearly from 0, > 0, or None: no warmup (default).
      eps: added to the bias-corrected ``sqrt(v)``, >= 0 (default 1e-8).
      weight_decay: decoupled decay, ``p -= lr * weight_decay * p``, >= 0 (default 0).
      foreach: the multi-tensor path (default: on CUDA).
      maximize: ascend instead of descend.

    Example:
      >>> opt = torch_opt.AdEMAMix(model.parameters(), lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=8.0,
      ...                          beta3_warmup=256_000, alpha_warmup=256_000, weight_decay=0.1)  # doctest: +SKIP

    References:
      Pagliardini et al. 2024, https://arxiv.org/abs/2409.03137; https://github.com/apple/ml-ademamix
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
                 alpha: float = 2.0, beta3_warmup: float | None = None, alpha_warmup: float | None = None,
                 eps: float = 1e-8, weight_decay: float = 0.0, *, foreach: bool | None = None,
                 maximize: bool = False):
        check_nonneg("lr", lr)
        check_betas("betas", betas, length=3)
        check_nonneg("alpha", alpha)
        check_range("beta3_warmup", beta3_warmup, 0.0, low_open=True)  # None (no warmup) is no number: passes
        check_range("alpha_warmup", alpha_warmup, 0.0, low_open=True)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), alpha=alpha, beta3_warmup=beta3_warmup, alpha_warmup=alpha_warmup,
                        eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize)

    def _init_state(self, p, group):
        return {"step": new_step(), "exp_avg_fast": torch.zeros_like(p), "exp_avg_slow": torch.zeros_like(p),
                "exp_avg_sq": torch.zeros_like(p)}

    def _update(self, group, params, grads, states, foreach):
        ademamix(params, grads, [s["exp_avg_fast"] for s in states], [s["exp_avg_slow"] for s in states],
                 [s["exp_avg_sq"] for s in states], [s["step"] for s in states], foreach=foreach, lr=group["lr"],
                 betas=group["betas"], alpha=group["alpha"], beta3_warmup=group["beta3_warmup"],
                 alpha_warmup=group["alpha_warmup"], eps=group["eps"], weight_decay=group["weight_decay"])


def ademamix(params, grads, exp_avg_fasts, exp_avg_slows, exp_avg_sqs, steps, *, foreach, lr, betas, alpha,
             beta3_warmup, alpha_warmup, eps, weight_decay):
    """Functional AdEMAMix step."""
    fn = _multi_tensor_ademamix if foreach else _single_tensor_ademamix
    fn(params, grads, exp_avg_fasts, exp_avg_slows, exp_avg_sqs, steps, lr=lr, betas=betas, alpha=alpha,
       beta3_warmup=beta3_warmup, alpha_warmup=alpha_warmup, eps=eps, weight_decay=weight_decay)


def _scalars(step, *, betas, alpha, beta3_warmup, alpha_warmup):
    """The step's ``1 - b1^t``, ``sqrt(1 - b2^t)``, alpha and beta3 (Python floats, as the official code)."""
    beta1, beta2, beta3 = betas
    return (1 - beta1**step, math.sqrt(1 - beta2**step), ademamix_alpha(step, alpha, alpha_warmup),
            ademamix_beta3(step, beta3, beta1, beta3_warmup))


def _single_tensor_ademamix(params, grads, exp_avg_fasts, exp_avg_slows, exp_avg_sqs, steps, *, lr, betas, alpha,
                            beta3_warmup, alpha_warmup, eps, weight_decay):
    beta1, beta2, _ = betas
    for param, grad, fast, slow, sq, step_t in zip(params, grads, exp_avg_fasts, exp_avg_slows, exp_avg_sqs, steps):
        step_t += 1
        bc1, bc2_sqrt, alpha_t, beta3_t = _scalars(step_t.item(), betas=betas, alpha=alpha, beta3_warmup=beta3_warmup,
                                                   alpha_warmup=alpha_warmup)
        for p, g, m1, m2, v in blocks(param, grad, fast, slow, sq):
            m1.mul_(beta1).add_(g, alpha=1 - beta1)
            m2.mul_(beta3_t).add_(g, alpha=1 - beta3_t)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bc2_sqrt).add_(eps)
            update = m1.div(bc1).add_(torch.mul(m2, alpha_t)).div_(denom)  # the official code's roundings
            if weight_decay != 0:
                update.add_(p, alpha=weight_decay)
            p.add_(update.mul_(-lr))


def _multi_tensor_ademamix(params, grads, exp_avg_fasts, exp_avg_slows, exp_avg_sqs, steps, *, lr, betas, alpha,
                           beta3_warmup, alpha_warmup, eps, weight_decay):
    beta1, beta2, _ = betas
    torch._foreach_add_(steps, 1)
    bc1s, bc2_sqrts, alphas, beta3s = zip(*(
        _scalars(s.item(), betas=betas, alpha=alpha, beta3_warmup=beta3_warmup, alpha_warmup=alpha_warmup)
        for s in steps))
    torch._foreach_mul_(exp_avg_fasts, beta1)
    torch._foreach_add_(exp_avg_fasts, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_slows, list(beta3s))
    torch._foreach_add_(exp_avg_slows, torch._foreach_mul(grads, [1 - b for b in beta3s]))
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denoms, list(bc2_sqrts))
    torch._foreach_add_(denoms, eps)
    updates = torch._foreach_div(exp_avg_fasts, list(bc1s))
    torch._foreach_add_(updates, torch._foreach_mul(exp_avg_slows, list(alphas)))
    torch._foreach_div_(updates, denoms)
    if weight_decay != 0:
        torch._foreach_add_(updates, params, alpha=weight_decay)
    torch._foreach_add_(params, updates, alpha=-lr)
