r"""RAdam (Liu et al., 2020), the arithmetic of torch.optim.RAdam.

For each parameter :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`, with
:math:`\rho_\infty = 2 / (1 - b_2) - 1` and
:math:`\rho_t = \rho_\infty - 2 t b_2^t / (1 - b_2^t)` (the length of the approximated SMA)::

    p   <- p * (1 - lr * weight_decay)             (decoupled_weight_decay=True, if weight_decay != 0)
    g   <- g + weight_decay * p                    (decoupled_weight_decay=False, if weight_decay != 0)
    m   <- m + (1 - b1) * (g - m)                  (lerp, as torch.optim)
    v   <- b2 * v + (1 - b2) * g * g
    if rho_t > 5:                                  (variance tractable: rectified adaptive step)
        r <- sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        p <- p - m / (1 - b1^t) * lr * sqrt(1 - b2^t) / (sqrt(v) + eps) * r
    else:                                          (plain momentum step, SGD with bias-corrected m)
        p <- p - m / (1 - b1^t) * lr

The multi-tensor path (as torch.optim's) folds both branches into one multiplier of ``m``:
``-lr r sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)`` (zero if not rectified) plus
``-lr / (1 - b1^t)`` (zero if rectified).

Papers: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020;
Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019
(``decoupled_weight_decay``).
Reference: ``torch.optim.RAdam`` (reproduced to 1e-12 relative in float64, see parity_tests).
``optax.radam`` adds eps to the root of the bias-corrected second moment,
``r * m_hat / (sqrt(v / (1 - b2^t)) + eps)``, where torch (and we) use
``r * m_hat * sqrt(1 - b2^t) / (sqrt(v) + eps)``: the effective eps differs by the factor
``sqrt(1 - b2^t)``. Its test is ``rho_t >= 5`` (``threshold=5``) where ours is ``rho_t > 5``,
which matters only if ``rho_t`` lands exactly on 5. With ``eps=0`` (and no exact 5) the two
agree up to rounding; no setting of ours reproduces optax for ``eps > 0``. optax has no weight
decay in ``radam``. Same arithmetic as ``jax_opt.radam``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_betas, check_nonneg

from ._base import Optimizer, blocks, new_step
from .adam import decay_and_update_moments, foreach_decay_and_update_moments


class RAdam(Optimizer):
    """Rectified Adam; ``decoupled_weight_decay=True`` decays as AdamW, else L2."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False, differentiable=False):
        check_nonneg("lr", lr)
        check_betas("betas", betas, length=2)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _init_state(self, p, group):
        return {"step": new_step(), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def _update(self, group, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        radam(
            params, grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["step"] for s in states],
            foreach=foreach, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
            weight_decay=group["weight_decay"], decoupled_weight_decay=group["decoupled_weight_decay"],
        )


def radam(params, grads, exp_avgs, exp_avg_sqs, steps, *, foreach, lr, beta1, beta2, eps,
          weight_decay, decoupled_weight_decay):
    """Functional RAdam step."""
    fn = _multi_tensor_radam if foreach else _single_tensor_radam
    fn(params, grads, exp_avgs, exp_avg_sqs, steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
       weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)


def _rectification(step, beta2):
    """The factor r of the rectified step, or 0 while the variance is intractable (rho_t <= 5)."""
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * (beta2**step) / (1 - beta2**step)
    if rho_t > 5:
        return ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    return 0


def _single_tensor_radam(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps,
                         weight_decay, decoupled_weight_decay):
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step_t += 1
        step = step_t.item()
        rect = _rectification(step, beta2)
        for p, g, m, v in blocks(param, grad, exp_avg, exp_avg_sq):
            decay_and_update_moments(p, g, m, v, lr=lr, beta1=beta1, beta2=beta2, weight_decay=weight_decay,
                                     decoupled_weight_decay=decoupled_weight_decay)
            bias_corrected_exp_avg = m / (1 - beta1**step)
            if rect:
                adaptive_lr = (1 - beta2**step) ** 0.5 / v.sqrt().add_(eps)
                p.add_(bias_corrected_exp_avg * lr * adaptive_lr * rect, alpha=-1.0)
            else:
                p.add_(bias_corrected_exp_avg * lr, alpha=-1.0)


def _multi_tensor_radam(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps,
                        weight_decay, decoupled_weight_decay):
    torch._foreach_add_(steps, 1)
    step_values = [s.item() for s in steps]
    foreach_decay_and_update_moments(params, grads, exp_avgs, exp_avg_sqs, lr=lr, beta1=beta1, beta2=beta2,
                                     weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
    rects = [_rectification(t, beta2) for t in step_values]
    bias_corrections1 = [1 - beta1**t for t in step_values]
    unrect_step_sizes = [(lr * (0 if r > 0 else 1.0) / bc) * -1 for r, bc in zip(rects, bias_corrections1)]
    rect_step_sizes = [((1 - beta2**t) ** 0.5) * (lr * r / bc) * -1
                       for t, r, bc in zip(step_values, rects, bias_corrections1)]
    # 1 / ((sqrt(v) + eps) / rect_step_size): a zero step size (not rectified) gives -inf, so 0.
    buffers = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(buffers, eps)
    torch._foreach_div_(buffers, rect_step_sizes)
    torch._foreach_reciprocal_(buffers)
    torch._foreach_add_(buffers, unrect_step_sizes)
    torch._foreach_addcmul_(params, exp_avgs, buffers)
