r"""SGD with optional (Nesterov) momentum, the arithmetic of torch.optim.SGD.

For each parameter :math:`p` with gradient :math:`g`::

    g   <- g + weight_decay * p                      (L2 penalty, only if weight_decay != 0)
    b   <- g                                         (first step: a copy, no dampening)
    b   <- momentum * b + (1 - dampening) * g        (later steps)
    d   <- g + momentum * b   if nesterov  else  b   (d = g when momentum == 0: no buffer)
    p   <- p - lr * d

Papers: Robbins & Monro, "A Stochastic Approximation Method", 1951; Polyak, "Some methods of
speeding up the convergence of iteration methods", 1964 (momentum); Sutskever, Martens, Dahl &
Hinton, "On the importance of initialization and momentum in deep learning", ICML 2013
(the Nesterov form used here).
Reference: ``torch.optim.SGD`` (reproduced to 1e-12 relative in float64, see parity_tests).
As there, the state of a parameter is only ``momentum_buffer``, created at its first step
when momentum != 0; there is no step count. Unlike torch.optim's multi-tensor Nesterov
path, the gradients (``p.grad``) are never modified in place.
``optax.sgd(learning_rate, momentum, nesterov)`` (its ``optax.trace`` starts from zeros, so
its first step also gives ``b = g``) has the same arithmetic for ``dampening=0`` and
``weight_decay=0``; it has no dampening and no weight decay (chain
``optax.add_decayed_weights`` before it). Same arithmetic as ``jax_opt.sgd``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_nesterov, check_nonneg, check_range

from ._base import Optimizer, blocks, fused_groups


class SGD(Optimizer):
    """Stochastic gradient descent; ``momentum > 0`` adds heavy-ball (or Nesterov) momentum."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, foreach=None, maximize=False, fused=None, capturable=False, differentiable=False):
        check_nonneg("lr", lr)
        check_nonneg("momentum", momentum)
        check_range("dampening", dampening, 0.0, 1.0)
        check_nonneg("weight_decay", weight_decay)
        check_nesterov(nesterov, momentum, dampening)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, fused=fused)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _init_state(self, p, group):
        # The buffer is a copy of the first (decayed) gradient, so it is made by the step.
        return {}

    def _update(self, group, params, grads, states, foreach):
        momentum_buffers = [s.get("momentum_buffer") for s in states]
        sgd(
            params, grads, momentum_buffers,
            foreach=foreach, fused=group["fused"], lr=group["lr"], momentum=group["momentum"],
            dampening=group["dampening"], weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
        )
        if group["momentum"] != 0:
            for state, buf in zip(states, momentum_buffers):
                state["momentum_buffer"] = buf


def sgd(params, grads, momentum_buffers, *, foreach, lr, momentum, dampening, weight_decay,
        nesterov, fused=False):
    """Functional SGD step. ``momentum_buffers`` holds a tensor or None (first step) per param;
    the None entries are replaced by the new buffers when momentum != 0."""
    fn = _fused_sgd if fused else _multi_tensor_sgd if foreach else _single_tensor_sgd
    fn(params, grads, momentum_buffers, lr=lr, momentum=momentum, dampening=dampening,
       weight_decay=weight_decay, nesterov=nesterov)


def _single_tensor_sgd(params, grads, momentum_buffers, *, lr, momentum, dampening, weight_decay,
                       nesterov):
    for i, (param, grad) in enumerate(zip(params, grads)):
        first = momentum != 0 and momentum_buffers[i] is None
        if first:  # the buffer starts as a copy of the (decayed) gradient, written block by block
            momentum_buffers[i] = torch.empty_like(grad, memory_format=torch.preserve_format)
        for p, g, buf in blocks(param, grad, momentum_buffers[i]):
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            if buf is not None:
                if first:
                    buf.copy_(g)
                else:
                    buf.mul_(momentum).add_(g, alpha=1 - dampening)
                g = g.add(buf, alpha=momentum) if nesterov else buf
            p.add_(g, alpha=-lr)


def _multi_tensor_sgd(params, grads, momentum_buffers, *, lr, momentum, dampening, weight_decay,
                      nesterov):
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if momentum != 0:
        if all(buf is not None for buf in momentum_buffers):
            torch._foreach_mul_(momentum_buffers, momentum)
            torch._foreach_add_(momentum_buffers, grads, alpha=1 - dampening)
        else:
            for i, grad in enumerate(grads):
                if momentum_buffers[i] is None:
                    momentum_buffers[i] = grad.detach().clone()
                else:
                    momentum_buffers[i].mul_(momentum).add_(grad, alpha=1 - dampening)
        # Out of place: torch.optim adds into the grads here, changing p.grad itself.
        grads = torch._foreach_add(grads, momentum_buffers, alpha=momentum) if nesterov else momentum_buffers
    torch._foreach_add_(params, grads, alpha=-lr)


def _fused_sgd(params, grads, momentum_buffers, *, lr, momentum, dampening, weight_decay, nesterov):
    # The kernel copies the (decayed) gradient into a new buffer on a first step; params whose
    # first step this is (a buffer of None) go to it apart from the others.
    first = [momentum != 0 and buf is None for buf in momentum_buffers]
    for i, grad in enumerate(grads):
        if first[i]:
            momentum_buffers[i] = torch.empty_like(grad)
    for is_first in set(first):
        idx = [i for i, f in enumerate(first) if f == is_first]
        bufs = [momentum_buffers[i] for i in idx] if momentum != 0 else []
        for p, g, b in fused_groups([params[i] for i in idx], [grads[i] for i in idx], bufs):
            torch._fused_sgd_(p, g, b, weight_decay=weight_decay, momentum=momentum, lr=lr, dampening=dampening,
                              nesterov=nesterov, maximize=False, is_first_step=is_first)
