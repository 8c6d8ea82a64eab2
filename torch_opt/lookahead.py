r"""Lookahead (Zhang et al., 2019), Algorithm 1, around any torch optimizer.

The inner optimizer updates the fast weights :math:`p` every step; the slow weights
:math:`s` start at the params' values before the first step, and after every k-th step::

    s <- s + alpha * (p - s)
    p <- s

Paper: Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back",
NeurIPS 2019. Reference: Algorithm 1 and michaelrzhang/lookahead (the slow update above);
the official code synchronises at the first step and every k steps after and takes the
slow weights from the params after the first inner step; Algorithm 1 (and optax, and
``jax_opt.lookahead``) starts the slow weights at the initial params and synchronises after
steps k, 2k, ...: we follow Algorithm 1 so both backends agree.
Unlike ``optax.lookahead`` (whose params are a ``LookaheadParams(fast, slow)`` pair), the slow
weights live in the optimizer state. torch.optim has no Lookahead.

``Lookahead`` is a real ``torch.optim.Optimizer`` sharing the inner optimizer's
``param_groups``, so lr schedulers, ``zero_grad`` and hooks act on it directly, and its
``state_dict`` carries the slow weights, the step counter, k, alpha and the inner state.
"""

from __future__ import annotations

import torch

from twinopt.hparams import check_int, check_range

from ._base import Wrapper, copy_each


class Lookahead(Wrapper):
    """Wrap ``optimizer``: every ``k`` steps pull the slow weights ``alpha`` of the way to the
    fast ones and restart the fast weights from there."""

    def __init__(self, optimizer, k=5, alpha=0.5, *, foreach=None):
        check_int("k", k)
        check_range("alpha", alpha, 0.0, 1.0, low_open=True)
        super().__init__(optimizer)
        self.k, self.alpha, self.foreach = k, alpha, foreach
        self.lookahead_step = 0

    def _params(self):
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        """One inner step (with ``closure``, if given); every k-th step, the slow update."""
        params = self._params()
        for p in params:
            if "slow_param" not in self.state[p]:
                self.state[p]["slow_param"] = p.detach().clone()
        loss = self._inner_step(closure)
        self.lookahead_step += 1
        if self.lookahead_step % self.k == 0:
            slow = [self.state[p]["slow_param"] for p in params]
            foreach = self.foreach if self.foreach is not None else all(p.is_cuda for p in params)
            if foreach:
                torch._foreach_add_(slow, torch._foreach_sub(params, slow), alpha=self.alpha)
                copy_each(params, slow)
            else:
                for p, s in zip(params, slow):
                    s.add_(p - s, alpha=self.alpha)
                    p.copy_(s)
        return loss

    def state_dict(self):
        state = super().state_dict()
        inner = self.optimizer.state_dict()
        state["inner_state"] = inner.pop("state")
        del inner["param_groups"]  # the same groups as Lookahead's own
        state["inner_extra"] = inner  # what a wrapper adds (ApplyIfFinite's counters)
        state["lookahead"] = {"k": self.k, "alpha": self.alpha, "step": self.lookahead_step}
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        missing = {"state", "param_groups", "inner_state", "lookahead"} - state_dict.keys()
        if missing:
            raise ValueError(
                f"Not a Lookahead state_dict: missing {sorted(missing)}. Load the inner optimizer's "
                "state_dict into the inner optimizer instead."
            )
        inner_state, lookahead = state_dict.pop("inner_state"), state_dict.pop("lookahead")
        super().load_state_dict(state_dict)
        self.optimizer.load_state_dict({"state": inner_state, "param_groups": state_dict["param_groups"],
                                        **state_dict.pop("inner_extra", {})})
        self.param_groups = self.optimizer.param_groups
        self.k, self.alpha, self.lookahead_step = lookahead["k"], lookahead["alpha"], lookahead["step"]
