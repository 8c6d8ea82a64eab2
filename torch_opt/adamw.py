r"""AdamW (Loshchilov & Hutter, 2019), the arithmetic of torch.optim.AdamW.

Adam (see :mod:`torch_opt.adam`) with decoupled weight decay, applied before the Adam step::

    p <- p * (1 - lr * weight_decay)
    m, v, (vm), d as in Adam, with the undecayed gradient g
    p <- p - lr / (1 - b1^t) * m / d

Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
Reference: ``torch.optim.AdamW``. ``optax.adamw`` computes the same step as
``p - lr * (adam_direction + weight_decay * p)`` (equal up to rounding); its default
weight_decay is 1e-4, ours (as torch) 1e-2. Same arithmetic as ``jax_opt.adamw``.
"""

from __future__ import annotations

from .adam import Adam


class AdamW(Adam):
    """Adam with decoupled weight decay (default 1e-2); ``amsgrad=True`` as in Adam."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, foreach=None, maximize=False, fused=None, capturable=False, differentiable=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         fused=fused, capturable=capturable, differentiable=differentiable,
                         decoupled_weight_decay=True)
