"""Skip optimizer steps whose gradients contain NaN or Inf: the torch ``optax.apply_if_finite``.

torch.optim and optax optimizers (ours included) apply whatever gradient they get: a single
NaN gradient makes the params, and the moments that feed every later step, NaN for good.
``ApplyIfFinite(optimizer, max_consecutive_errors)`` checks the gradients first; if any is
not finite, neither the params nor the inner optimizer's state change (its step count does
not advance), as if the step had not been taken. After more than ``max_consecutive_errors``
non-finite steps in a row it gives up and applies them.

The counters and the rule are optax's: on each step ``notfinite_count`` (consecutive
non-finite steps, reset by a finite one) is updated first, and the step is applied iff the
gradients are finite or ``notfinite_count > max_consecutive_errors``, so with ``m`` the
first ``m`` bad steps of a run are skipped and every later one of that run is applied;
``last_finite`` and ``total_notfinite`` (never reset) are the other two.
``ApplyIfFinite(torch_opt.Adam(...), m)`` follows ``optax.apply_if_finite(jax_opt.adam(...), m)``.
One difference: a torch lr scheduler steps outside the optimizer and so also on skipped
steps, whereas an optax schedule counts the inner state's steps and does not.

Like :class:`Lookahead`, it is a real ``torch.optim.Optimizer`` sharing the inner
optimizer's ``param_groups`` (and ``state``), so lr schedulers, ``zero_grad`` and hooks act
on it directly; its ``state_dict`` is the inner one plus the counters.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_int

from ._base import Wrapper


class ApplyIfFinite(Wrapper):
    """Wrap ``optimizer``: skip steps with non-finite gradients, unless more than
    ``max_consecutive_errors`` in a row."""

    def __init__(self, optimizer, max_consecutive_errors):
        if isinstance(optimizer, ApplyIfFinite):  # both would store their counters under one key
            raise TypeError("ApplyIfFinite around an ApplyIfFinite: wrap the inner optimizer once.")
        # optax accepts anything here; a negative count would act as 0, a float is a mistake.
        check_int("max_consecutive_errors", max_consecutive_errors, low=0)
        super().__init__(optimizer)
        self.state = optimizer.state
        self.max_consecutive_errors = max_consecutive_errors
        self.notfinite_count, self.last_finite, self.total_notfinite = 0, True, 0

    def _grads_finite(self):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return True
        device = grads[0].device
        # One flag per tensor, reduced on one device: a single sync. isfinite is exact, where a
        # norm or sum of large finite gradients could overflow to Inf.
        flags = [torch.isfinite(g.coalesce().values() if g.is_sparse else g).all().to(device) for g in grads]
        return bool(torch.stack(flags).all())

    @torch.no_grad()
    def step(self, closure=None):
        """Evaluate ``closure`` (if given), then take the inner step unless it must be skipped."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        finite = self._grads_finite()
        self.notfinite_count = 0 if finite else self.notfinite_count + 1
        self.total_notfinite += not finite
        self.last_finite = finite
        if finite or self.notfinite_count > self.max_consecutive_errors:
            self._inner_step(None if closure is None else _first_call_cached(closure, loss))
        return loss

    def state_dict(self):
        return {
            **self.optimizer.state_dict(),
            "apply_if_finite": {
                "max_consecutive_errors": self.max_consecutive_errors, "notfinite_count": self.notfinite_count,
                "last_finite": self.last_finite, "total_notfinite": self.total_notfinite,
            },
        }

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        if "apply_if_finite" not in state_dict:
            raise ValueError(
                "Not an ApplyIfFinite state_dict: missing 'apply_if_finite'. Load the inner optimizer's "
                "state_dict into the inner optimizer instead."
            )
        counters = state_dict.pop("apply_if_finite")
        self.optimizer.load_state_dict(state_dict)
        # Optimizer.load_state_dict rebinds the inner lists/dicts; keep sharing them.
        self.param_groups, self.state = self.optimizer.param_groups, self.optimizer.state
        self.max_consecutive_errors = counters["max_consecutive_errors"]
        self.notfinite_count, self.last_finite, self.total_notfinite = (
            counters["notfinite_count"], counters["last_finite"], counters["total_notfinite"])


def _first_call_cached(closure, loss):
    """The closure was already evaluated to check the gradients: hand the inner optimizer that
    result on its first call, so one-evaluation optimizers do not evaluate twice, while ones
    that re-evaluate (LBFGS) still can."""
    calls = []

    def cached():
        if not calls:
            calls.append(1)
            return loss
        return closure()

    return cached
