r"""RMSprop (Tieleman & Hinton, 2012), the arithmetic of torch.optim.RMSprop.

For each parameter :math:`p` with gradient :math:`g`::

    g   <- g + weight_decay * p                    (L2 penalty, only if weight_decay != 0)
    v   <- alpha * v + (1 - alpha) * g * g          (square_avg)
    m   <- m + (1 - alpha) * (g - m)                (grad_avg, lerp as torch; centered only)
    a   <- sqrt(v - m * m) + eps   if centered  else  sqrt(v) + eps
    b   <- momentum * b + g / a                     (momentum_buffer; only if momentum > 0)
    p   <- p - lr * b   if momentum > 0  else  p - lr * g / a

The learning rate multiplies the buffer, it is not accumulated in it: a learning rate changed
between steps (a scheduler) rescales the whole buffer, as in torch.optim.
Papers: Tieleman & Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for Machine
Learning, 2012; Graves, "Generating Sequences With Recurrent Neural Networks",
arXiv:1308.0850, 2013 (the centered form, Eq. 38-45).
Reference: ``torch.optim.RMSprop`` (reproduced to 1e-12 relative in float64, see parity_tests).
``optax.rmsprop`` differs: ``decay=0.9`` by default (our alpha: 0.99), eps inside the root by
default (``eps_in_sqrt=True``), and the momentum trace accumulates ``lr * g / a``, i.e. the
learning rate sits inside the buffer; no weight decay. With a constant learning rate,
``optax.chain(optax.add_decayed_weights(weight_decay), optax.rmsprop(lr, decay=alpha, eps=eps,
eps_in_sqrt=False, centered=centered, momentum=momentum or None))`` gives our trajectory up
to rounding; under a schedule with momentum it does not. Same arithmetic as
``jax_opt.rmsprop``.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_nonneg, check_range

from ._base import Optimizer, blocks, new_step


class RMSprop(Optimizer):
    """RMSprop; ``momentum > 0`` adds a buffer, ``centered=True`` divides by a variance estimate."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, *, foreach=None, maximize=False, capturable=False, differentiable=False):
        check_nonneg("lr", lr)
        check_range("alpha", alpha, 0.0, 1.0)
        check_nonneg("eps", eps)
        check_nonneg("weight_decay", weight_decay)
        check_nonneg("momentum", momentum)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered)
        super().__init__(params, defaults, foreach=foreach, maximize=maximize, capturable=capturable,
                         differentiable=differentiable)

    def _init_state(self, p, group):
        state = {"step": new_step(), "square_avg": torch.zeros_like(p)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p)
        return state

    def _update(self, group, params, grads, states, foreach):
        rmsprop(
            params, grads,
            [s["square_avg"] for s in states],
            [s["grad_avg"] for s in states] if group["centered"] else None,
            [s["momentum_buffer"] for s in states] if group["momentum"] > 0 else None,
            [s["step"] for s in states],
            foreach=foreach, lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
            weight_decay=group["weight_decay"], momentum=group["momentum"],
        )


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, steps, *, foreach, lr, alpha,
            eps, weight_decay, momentum):
    """Functional RMSprop step; ``grad_avgs`` is None unless centered, ``momentum_buffers`` None
    unless momentum > 0."""
    fn = _multi_tensor_rmsprop if foreach else _single_tensor_rmsprop
    fn(params, grads, square_avgs, grad_avgs, momentum_buffers, steps, lr=lr, alpha=alpha, eps=eps,
       weight_decay=weight_decay, momentum=momentum)


def _single_tensor_rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, steps, *, lr,
                           alpha, eps, weight_decay, momentum):
    for i, (param, grad, square_avg, step_t) in enumerate(zip(params, grads, square_avgs, steps)):
        step_t += 1
        grad_avg = grad_avgs[i] if grad_avgs is not None else None
        momentum_buffer = momentum_buffers[i] if momentum_buffers is not None else None
        for p, g, sq, g_avg, buf in blocks(param, grad, square_avg, grad_avg, momentum_buffer):
            if weight_decay != 0:
                g = g.add(p, alpha=weight_decay)
            sq.mul_(alpha).addcmul_(g, g, value=1 - alpha)
            if g_avg is not None:
                g_avg.lerp_(g, 1 - alpha)
                avg = sq.addcmul(g_avg, g_avg, value=-1).sqrt_()
            else:
                avg = sq.sqrt()
            avg = avg.add_(eps)
            if buf is not None:
                buf.mul_(momentum).addcdiv_(g, avg)
                p.add_(buf, alpha=-lr)
            else:
                p.addcdiv_(g, avg, value=-lr)


def _multi_tensor_rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffers, steps, *, lr,
                          alpha, eps, weight_decay, momentum):
    torch._foreach_add_(steps, 1)
    if weight_decay != 0:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_mul_(square_avgs, alpha)
    torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
    if grad_avgs is not None:
        torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
        avg = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
        torch._foreach_sqrt_(avg)
    else:
        avg = torch._foreach_sqrt(square_avgs)
    torch._foreach_add_(avg, eps)
    if momentum_buffers is not None:
        torch._foreach_mul_(momentum_buffers, momentum)
        torch._foreach_addcdiv_(momentum_buffers, grads, avg)
        torch._foreach_add_(params, momentum_buffers, alpha=-lr)
    else:
        torch._foreach_addcdiv_(params, grads, avg, value=-lr)
