r"""AdamW (Loshchilov & Hutter, 2019), the arithmetic of torch.optim.AdamW.

Adam (see :mod:`jax_opt.adam`) with decoupled weight decay::

    m, v, (vm), d as in Adam, with the undecayed gradient g
    p <- p - lr * ((m / d) / (1 - b1^t) + weight_decay * p)

torch.optim.AdamW computes ``p * (1 - lr * weight_decay)`` first and then subtracts the Adam
step: the same value up to rounding (parity within 1e-12 in float64).
Paper: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
Reference: ``torch.optim.AdamW``. ``optax.adamw`` is this same composition but defaults to
weight_decay=1e-4 (ours, as torch: 1e-2) and has no AMSGrad option.
"""

from __future__ import annotations

import optax

from twinopt.hparams import check_beta, check_nonneg

from ._common import with_weight_decay
from .adam import scale_by_adam


def adamw(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-2,
          amsgrad=False) -> optax.GradientTransformation:
    """Adam with decoupled weight decay; ``amsgrad=True`` as in :func:`jax_opt.adam`."""
    check_nonneg("learning_rate", learning_rate)
    check_beta("b1", b1)
    check_beta("b2", b2)
    check_nonneg("eps", eps)
    check_nonneg("weight_decay", weight_decay)
    return with_weight_decay(scale_by_adam(b1, b2, eps, amsgrad), learning_rate, weight_decay, decoupled=True)
