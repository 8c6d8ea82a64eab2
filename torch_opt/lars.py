r"""LARS, layer-wise adaptive rate scaling (You et al., 2017), the arithmetic of ``optax.lars``.

For each parameter tensor :math:`p` with gradient :math:`g` (``||.||``: the tensor's 2-norm)::

    u <- g + weight_decay * p                                  (only if weight_decay != 0)
    r <- trust_coefficient * ||p|| / (||u|| + eps)             (r = 1 if ||p|| = 0 or ||u|| = 0)
    u <- (lr * r) * u
    b <- momentum * b + u                                      (b starts at 0)
    p <- p - (u + momentum * b   if nesterov  else  b)

``exclude_vectors=True``: params with fewer than two dimensions take ``u = lr * g`` (no decay, no
trust ratio). The learning rate is inside the buffer, as in optax: under an lr scheduler each
step's rate scales that step's update only (torch.optim.SGD multiplies the whole buffer by the
current rate); with a constant rate the two are the same.

Paper: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017.
Reference: ``optax.lars`` of optax 0.2.8 (transcribed in ``parity_tests/reference.py``); optax
multiplies by ``r`` and then by ``-lr``, here by ``lr * r`` once (rounding only), and it keeps
``-b``. torch.optim has no LARS; pytorch_optimizer's ``LARS`` computes these steps with
``exclude_vectors=True`` and weight_decay 0 (its ratio is the paper's
``||p|| / (||g|| + weight_decay ||p||)``). Keeps no step count. Same arithmetic as ``jax_opt.lars``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_nonneg

from ._base import Optimizer


def trust_ratio(norm_p, norm_u, trust_coefficient, eps):
    """``trust_coefficient * ||p|| / (||u|| + eps)``, 1 where either norm is 0 (optax's
    ``scale_by_trust_ratio``), on 0-d or stacked norms; stays on their device (no sync)."""
    return torch.where((norm_p == 0) | (norm_u == 0), 1.0, trust_coefficient * norm_p / (norm_u + eps))


def trust_ratios(params, updates, trust_coefficient=1.0, eps=0.0):
    """:func:`trust_ratio` of each (param, update) pair, stacked: one norm kernel per list."""
    norms_p, norms_u = (torch.stack(torch._foreach_norm(tensors)) for tensors in (params, updates))
    return trust_ratio(norms_p, norms_u, trust_coefficient, eps)


class LARS(Optimizer):
    """LARS: momentum SGD whose update of each tensor is scaled by its trust ratio.

    Args:
      params: the parameters, or param groups (dicts) with their own hyperparameters.
      lr: the learning rate, >= 0 (inside the momentum buffer, as optax).
      momentum: the buffer's decay, >= 0 (0: no momentum).
      weight_decay: L2 decay added to the gradient before the trust ratio, >= 0.
      trust_coefficient: the trust ratio's factor, >= 0 (the paper's eta).
      eps: added to the update's norm in the ratio's denominator, >= 0.
      nesterov: Nesterov momentum ``u + momentum * b``.
      exclude_vectors: params with fewer than two dimensions (biases, norm scales) take plain
        momentum steps, without weight decay and trust ratio.
      foreach: the multi-tensor path (default: on CUDA).
      maximize: ascend instead of descend.

    Example:
      >>> opt = torch_opt.LARS(model.parameters(), lr=1.0, weight_decay=1e-6)  # doctest: +SKIP
    """

    def __init__(self, params, lr=1e-3, momentum=0.9, weight_decay=0.0, trust_coefficient=1e-3, eps=0.0,
                 nesterov=False, exclude_vectors=False, *, foreach=None, maximize=False):
        check_nonneg("lr", lr)
        check_nonneg("momentum", momentum)
        check_nonneg("weight_decay", weight_decay)
        check_nonneg("trust_coefficient", trust_coefficient)
        check_nonneg("eps", eps)
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        eps=eps, nesterov=nesterov, exclude_vectors=exclude_vectors)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize)

    def _init_state(self, p, group):
        return {"momentum_buffer": torch.zeros_like(p)}

    def _update(self, group, params, grads, states, foreach):
        lars(params, grads, [s["momentum_buffer"] for s in states], foreach=foreach, lr=group["lr"],
             momentum=group["momentum"], weight_decay=group["weight_decay"],
             trust_coefficient=group["trust_coefficient"], eps=group["eps"], nesterov=group["nesterov"],
             exclude_vectors=group["exclude_vectors"])


def lars(params, grads, momentum_buffers, *, foreach, lr, momentum, weight_decay, trust_coefficient, eps, nesterov,
         exclude_vectors):
    """Functional LARS step."""
    fn = _multi_tensor_lars if foreach else _single_tensor_lars
    fn(params, grads, momentum_buffers, lr=lr, momentum=momentum, weight_decay=weight_decay,
       trust_coefficient=trust_coefficient, eps=eps, nesterov=nesterov, exclude_vectors=exclude_vectors)


def _adapted(p, exclude_vectors):
    return not exclude_vectors or p.ndim > 1


# The norms need whole tensors: the per-tensor path does not split large params into blocks.
def _single_tensor_lars(params, grads, momentum_buffers, *, lr, momentum, weight_decay, trust_coefficient, eps,
                        nesterov, exclude_vectors):
    for p, g, buf in zip(params, grads, momentum_buffers):
        if _adapted(p, exclude_vectors):
            u = g.add(p, alpha=weight_decay) if weight_decay != 0 else g
            ratio = trust_ratio(torch.linalg.vector_norm(p), torch.linalg.vector_norm(u), trust_coefficient, eps)
            update = torch.mul(u, ratio * lr)
        else:
            update = torch.mul(g, lr)
        buf.mul_(momentum).add_(update)
        p.sub_(update.add_(buf, alpha=momentum) if nesterov else buf)


def _multi_tensor_lars(params, grads, momentum_buffers, *, lr, momentum, weight_decay, trust_coefficient, eps,
                       nesterov, exclude_vectors):
    updates = list(grads)
    adapted = [i for i, p in enumerate(params) if _adapted(p, exclude_vectors)]
    vectors = [i for i, p in enumerate(params) if not _adapted(p, exclude_vectors)]
    if adapted:
        ps, us = [params[i] for i in adapted], [grads[i] for i in adapted]
        if weight_decay != 0:
            us = torch._foreach_add(us, ps, alpha=weight_decay)
        scales = (trust_ratios(ps, us, trust_coefficient, eps) * lr).unbind()
        for i, u in zip(adapted, torch._foreach_mul(us, scales)):
            updates[i] = u
    if vectors:
        for i, u in zip(vectors, torch._foreach_mul([grads[i] for i in vectors], lr)):
            updates[i] = u
    torch._foreach_mul_(momentum_buffers, momentum)
    torch._foreach_add_(momentum_buffers, updates)
    if nesterov:
        torch._foreach_add_(updates, momentum_buffers, alpha=momentum)
        torch._foreach_sub_(params, updates)
    else:
        torch._foreach_sub_(params, momentum_buffers)
