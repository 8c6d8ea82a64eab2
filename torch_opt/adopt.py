r"""ADOPT (Taniguchi et al., 2024), the arithmetic of the official code.

Adam with the current gradient normalized by the *previous* second moment, before the momentum
(so the two are independent), and the normalized gradient clipped to ``clip_lambda(t)``. For
each parameter :math:`p` with gradient :math:`g`, at the step :math:`t = 0, 1, 2, \dots` (the
number of earlier steps)::

    g <- g + weight_decay * p                      (L2 penalty, unless decouple; at t = 0 too)
    t = 0:  v <- g * g                             (the first step only initialises v: p stays)
    t > 0:  p <- p - lr * weight_decay * p         (decouple only)
            n <- g / max(sqrt(v), eps)
            n <- clamp(n, -c, c),  c = clip_lambda(t)   (default t ** 0.25; none if unclipped)
            m <- m + (1 - b1) * (n - m)            (lerp)
            p <- p - lr * m
            v <- b2 * v + (1 - b2) * g * g

Paper: Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki, Iwasawa & Matsuo,
"ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal Rate", NeurIPS 2024.
Reference: iShohei220/adopt ``src/adopt/adopt.py`` at commit 6468572 (2024-12-13, package 0.1.0;
``parity_tests/reference.py`` transcribes it). torch.optim has no ADOPT. Differences from the
official code:

- ``unclipped=True`` (keyword-only) is ``clip_lambda=None``, the paper's original unclipped
  algorithm, in a form the command line can give; ``clip_lambda`` stays the official callable of
  the step (the 0-based count of earlier steps, as a float), and may also be a number (one clipping
  value for every step, as jax_opt receives it under ``optax.inject_hyperparams``).
- The foreach path groups the params by their step count (the official one takes the first
  param's count for all of them, so a param that joined later would skip its initialising step).
- ``clip_lambda`` survives ``copy.deepcopy`` and pickling (torch.optim pickles only defaults,
  state and param groups); no ``capturable``, ``differentiable``, ``fused`` or complex params.

Both paths give the official class's float64 trajectory bit for bit (measured on the parity
problem, with L2 and decoupled decay, clipped and unclipped). ``pytorch_optimizer.ADOPT`` calls
``clip_lambda`` with the 1-based step, so its ``clip_lambda=lambda s: (s - 1) ** 0.25`` computes
these steps; its decoupled decay also shrinks the params at the first step. Same arithmetic as
``jax_opt.adopt``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from twinopt.hparams import check_betas, check_clip_schedule, check_nonneg
from twinopt.schedules import adopt_clip

from ._base import Optimizer, blocks, new_step


class ADOPT(Optimizer):
    """ADOPT: Adam with the gradient normalized by the previous second moment, clipped, then averaged.

    Args:
      params: the parameters, or param groups (dicts) with their own hyperparameters.
      lr: the learning rate, >= 0 (default 1e-3).
      betas: ``(b1, b2)``, each in [0, 1) (default ``(0.9, 0.9999)``): the decays of the momentum
        of the normalized gradient and of the second moment.
      eps: the floor of ``sqrt(v)``, >= 0 (default 1e-6).
      clip_lambda: the clipping value as a function of the 0-based step count (default
        ``twinopt.schedules.adopt_clip``, ``t ** 0.25``), a number >= 0 (the same at every step),
        or None: no clipping. Kept by the optimizer, not its param groups.
      weight_decay: >= 0 (default 0): L2 added to the gradient, or decoupled if ``decouple``.
      decouple: decay as AdamW, ``p -= lr * weight_decay * p`` (default False).
      unclipped: no clipping in this group, as ``clip_lambda=None`` (default False).
      foreach: the multi-tensor path (default: on CUDA).
      maximize: ascend instead of descend.

    The first step of each param only sets ``v = g * g``; the param moves from the second on.

    Example:
      >>> opt = torch_opt.ADOPT(model.parameters(), lr=1e-3, decouple=True, weight_decay=1e-2)  # doctest: +SKIP

    References:
      Taniguchi et al., NeurIPS 2024, https://arxiv.org/abs/2411.02853; https://github.com/iShohei220/adopt
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.9999),
                 eps: float = 1e-6, clip_lambda: Callable[[float], float] | None = adopt_clip,
                 weight_decay: float = 0.0, decouple: bool = False, *, unclipped: bool = False,
                 foreach: bool | None = None, maximize: bool = False):
        check_nonneg("lr", lr)
        check_betas("betas", betas, length=2)
        check_nonneg("eps", eps)
        check_clip_schedule("clip_lambda", clip_lambda)
        check_nonneg("weight_decay", weight_decay)
        self.clip_lambda = clip_lambda
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, decouple=decouple,
                        unclipped=unclipped)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize)

    def __getstate__(self):
        return {**super().__getstate__(), "clip_lambda": self.clip_lambda}

    def _init_state(self, p, group):
        return {"step": new_step(), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def _update(self, group, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        adopt(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
              [s["step"] for s in states], foreach=foreach, lr=group["lr"], beta1=beta1, beta2=beta2,
              eps=group["eps"], clip_lambda=None if group["unclipped"] else self.clip_lambda,
              weight_decay=group["weight_decay"], decouple=group["decouple"])


def clip_at(clip_lambda, step):
    """The clipping value at the 0-based ``step`` (None: no clipping)."""
    return clip_lambda(step) if callable(clip_lambda) else clip_lambda


def adopt(params, grads, exp_avgs, exp_avg_sqs, steps, *, foreach, lr, beta1, beta2, eps, clip_lambda, weight_decay,
          decouple):
    """Functional ADOPT step; ``clip_lambda`` a function of the step, a number, or None (no clipping)."""
    fn = _multi_tensor_adopt if foreach else _single_tensor_adopt
    fn(params, grads, exp_avgs, exp_avg_sqs, steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
       clip_lambda=clip_lambda, weight_decay=weight_decay, decouple=decouple)


def _single_tensor_adopt(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, clip_lambda,
                         weight_decay, decouple):
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step = step_t.item()
        clip = clip_at(clip_lambda, step) if step != 0 else None
        for p, g, m, v in blocks(param, grad, exp_avg, exp_avg_sq):
            if weight_decay != 0 and not decouple:
                g = g.add(p, alpha=weight_decay)
            if step == 0:
                v.addcmul_(g, g)
                continue
            if weight_decay != 0 and decouple:
                p.add_(p, alpha=-lr * weight_decay)
            normed = g.div(v.sqrt().clamp_(min=eps))
            if clip is not None:
                normed.clamp_(-clip, clip)
            m.lerp_(normed, 1 - beta1)
            p.add_(m, alpha=-lr)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        step_t += 1


def _multi_tensor_adopt(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, clip_lambda,
                        weight_decay, decouple):
    if weight_decay != 0 and not decouple:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    by_step = {}
    for i, step_t in enumerate(steps):
        by_step.setdefault(step_t.item(), []).append(i)
    for step, idx in by_step.items():
        p, g, m, v = ([tensors[i] for i in idx] for tensors in (params, grads, exp_avgs, exp_avg_sqs))
        if step == 0:
            torch._foreach_addcmul_(v, g, g)
            continue
        if weight_decay != 0 and decouple:
            torch._foreach_add_(p, p, alpha=-lr * weight_decay)
        denoms = torch._foreach_sqrt(v)
        torch._foreach_clamp_min_(denoms, eps)
        normed = torch._foreach_div(g, denoms)
        clip = clip_at(clip_lambda, step)
        if clip is not None:
            torch._foreach_clamp_min_(normed, -clip)
            torch._foreach_clamp_max_(normed, clip)
        torch._foreach_lerp_(m, normed, 1 - beta1)
        torch._foreach_add_(p, m, alpha=-lr)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, value=1 - beta2)
    torch._foreach_add_(steps, 1)
