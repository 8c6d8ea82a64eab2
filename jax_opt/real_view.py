r"""Complex parameters stepped as torch.optim steps them: as pairs of real numbers.

The jax_opt optimizers take complex parameters as optax does: moments of the gradient stay complex,
its squares are :math:`|g|^2` (real), so an Adam second moment of a gradient ``1j`` is ``0.001``.
torch.optim (and ``torch_opt``) instead steps the real view of each complex tensor
(``torch.view_as_real``): its real and imaginary parts are params of their own, with a second moment
each. ``real_view(tx)`` gives any transformation torch's behaviour, so that a complex model trains
the same in both backends::

    u = real_view(tx).update(g)  ==  complex(u_re, u_im),  (u_re, u_im) = tx.update((g.real, g.imag))

The state is ``tx``'s state of the real views (complex leaves with a trailing axis of 2, as
``torch.view_as_real`` lays them out); real leaves pass unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def as_real(tree):
    """Each complex leaf as ``torch.view_as_real`` lays it out: real and imaginary parts on a new last axis."""
    return jax.tree_util.tree_map(
        lambda x: jnp.stack([x.real, x.imag], axis=-1) if jnp.iscomplexobj(x) else x, tree)


def as_complex(tree, like):
    """The inverse of :func:`as_real` for the leaves that are complex in ``like``."""
    return jax.tree_util.tree_map(
        lambda x, z: jax.lax.complex(x[..., 0], x[..., 1]).astype(z.dtype) if jnp.iscomplexobj(z) else x, tree, like)


def real_view(inner: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``inner`` applied to the real views of complex params and updates (torch.optim's complex handling).

    Args:
      inner: any optax transformation (a jax_opt factory's result, ``optax.adam(...)``, a chain).

    Returns:
      A ``GradientTransformationExtraArgs`` (extra update arguments reach ``inner``) whose updates of
      complex leaves are complex, computed by ``inner`` on their (real, imaginary) pairs.

    Example:
      >>> import jax.numpy as jnp, jax_opt
      >>> params, grads = {"w": jnp.array([1.0 + 1.0j])}, {"w": jnp.array([3.0 + 1.0j])}
      >>> for tx in (jax_opt.adam(0.1), jax_opt.real_view(jax_opt.adam(0.1))):  # optax's way, torch's way
      ...     updates, _ = tx.update(grads, tx.init(params), params)
      ...     print(jnp.round(updates["w"], 4))
      [-0.0949-0.0316j]
      [-0.1-0.1j]

    References:
      ``torch.view_as_real`` and torch.optim's ``_view_as_real`` (every algorithm with complex support).
    """
    inner = optax.with_extra_args_support(inner)

    def init(params):
        return inner.init(as_real(params))

    def update(updates, state, params=None, **extra_args):
        real_params = None if params is None else as_real(params)
        real_updates, state = inner.update(as_real(updates), state, real_params, **extra_args)
        return as_complex(real_updates, updates), state

    return optax.GradientTransformationExtraArgs(init, update)
