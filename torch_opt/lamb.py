r"""LAMB, layer-wise adaptive moments (You et al., 2020), the arithmetic of ``optax.lamb``.

For each parameter tensor :math:`p` with gradient :math:`g`, at step :math:`t = 1, 2, \dots`
(``||.||``: the tensor's 2-norm)::

    m <- b1 * m + (1 - b1) * g
    v <- b2 * v + (1 - b2) * g * g
    u <- (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    u <- u + weight_decay * p                                  (decoupled: after the Adam step)
    r <- ||p|| / ||u||                                         (r = 1 if ||p|| = 0 or ||u|| = 0)
    p <- p - lr * (r * u)

Paper: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
ICLR 2020 (Algorithm 2, phi the identity). Reference: ``optax.lamb`` of optax 0.2.8
(``eps_root=0``), transcribed in ``parity_tests/reference.py``. torch.optim has no LAMB.
torch-optimizer's ``Lamb`` (no bias correction, ``||p||`` clamped at 10) computes these steps
for eps = 0 and weight_decay = 0 where ``||p|| <= 10``; pytorch_optimizer's ``Lamb`` (second
moment uncorrected, ``1 / (1 - b1^t)`` outside the ratio, eps added to ``||u||``, the same clamp)
for b1 = 0 and eps = 0 as well (docs/optimizers/lamb.md). Same arithmetic as ``jax_opt.lamb``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_betas, check_nonneg

from ._base import Optimizer, new_step
from .lars import trust_ratio, trust_ratios


class LAMB(Optimizer):
    """LAMB: the Adam step plus decoupled decay, scaled per tensor by its trust ratio.

    Args:
      params: the parameters, or param groups (dicts) with their own hyperparameters.
      lr: the learning rate, >= 0 (each tensor moves by ``lr * ||p||`` a step).
      betas: ``(b1, b2)``, each in [0, 1): the decays of the first and second moments.
      eps: added to the root of the bias-corrected second moment, >= 0.
      weight_decay: decoupled decay, added to the Adam step before the trust ratio, >= 0.
      foreach: the multi-tensor path (default: on CUDA).
      maximize: ascend instead of descend.

    Example:
      >>> opt = torch_opt.LAMB(model.parameters(), lr=1e-3, weight_decay=0.01)  # doctest: +SKIP
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, *, foreach=None,
                 maximize=False):
        check_nonneg("lr", lr)
        check_betas("betas", betas, length=2)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize)

    def _init_state(self, p, group):
        return {"step": new_step(), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def _update(self, group, params, grads, states, foreach):
        beta1, beta2 = group["betas"]
        lamb(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
             [s["step"] for s in states], foreach=foreach, lr=group["lr"], beta1=beta1, beta2=beta2,
             eps=group["eps"], weight_decay=group["weight_decay"])


def lamb(params, grads, exp_avgs, exp_avg_sqs, steps, *, foreach, lr, beta1, beta2, eps, weight_decay):
    """Functional LAMB step."""
    fn = _multi_tensor_lamb if foreach else _single_tensor_lamb
    fn(params, grads, exp_avgs, exp_avg_sqs, steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
       weight_decay=weight_decay)


# The norms need whole tensors: the per-tensor path does not split large params into blocks.
def _single_tensor_lamb(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay):
    for p, g, m, v, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step_t += 1
        step = step_t.item()
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        update = torch.div(m, 1 - beta1**step).div_(torch.div(v, 1 - beta2**step).sqrt_().add_(eps))
        if weight_decay != 0:
            update.add_(p, alpha=weight_decay)
        ratio = trust_ratio(torch.linalg.vector_norm(p), torch.linalg.vector_norm(update), 1.0, 0.0)
        p.addcmul_(update, ratio, value=-lr)


def _multi_tensor_lamb(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps, weight_decay):
    torch._foreach_add_(steps, 1)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    step_values = [s.item() for s in steps]
    updates = torch._foreach_div(exp_avgs, [1 - beta1**t for t in step_values])
    denoms = torch._foreach_div(exp_avg_sqs, [1 - beta2**t for t in step_values])
    torch._foreach_sqrt_(denoms)
    torch._foreach_add_(denoms, eps)
    torch._foreach_div_(updates, denoms)
    if weight_decay != 0:
        torch._foreach_add_(updates, params, alpha=weight_decay)
    torch._foreach_mul_(updates, trust_ratios(params, updates).unbind())
    torch._foreach_add_(params, updates, alpha=-lr)
