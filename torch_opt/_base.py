"""The step machinery every torch_opt optimizer shares.

As in torch.optim, an optimizer class validates and stores its defaults, and ``step``
gathers the tensors of each param group and hands them to the algorithm's functional core,
which has a per-tensor path and a multi-tensor (``torch._foreach_*``) path.
"""

from __future__ import annotations

import torch


def default_foreach(params) -> bool:
    """torch.optim's default: the multi-tensor path on CUDA, the per-tensor one elsewhere."""
    return all(p.is_cuda for p in params)


def scalar_step_dtype():
    """The dtype torch.optim keeps step counts in (float64 only under a float64 default)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def new_step(device=None):
    """A step count; the fused kernels read it on the params' device."""
    return torch.tensor(0.0, dtype=scalar_step_dtype(), device=device)


# Elements per block of the per-tensor paths: one block of each of an update's arrays (up to
# about six) stays in the L2/L3 caches while every operation of the update runs on it.
BLOCK = 1 << 18
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def blocks(*tensors):
    """The tensors of one param (None entries allowed), or, for a large param on the CPU, their
    flat slices of :data:`BLOCK` elements in order. An elementwise update then runs all its
    operations on one slice while it is in cache, instead of streaming the whole tensors from
    memory once per operation: 2x faster on ResNet-sized tensors. Other tensors (GPU, strided,
    subclasses such as FSDP's DTensor) come whole."""
    first = tensors[0]
    if first.numel() <= BLOCK or first.device.type != "cpu" or not all(
            t is None or (type(t) in _PLAIN and t.is_contiguous()) for t in tensors):
        yield tensors
        return
    flat = [None if t is None else t.view(-1) for t in tensors]
    for start in range(0, first.numel(), BLOCK):
        yield tuple(None if f is None else f[start:start + BLOCK] for f in flat)


def copy_each(targets, sources) -> None:
    """``torch._foreach_copy_``, tensor by tensor: it has no sharding rule for FSDP2's DTensor params."""
    for target, source in zip(targets, sources):
        target.copy_(source)


def real_view(t):
    """A complex tensor as torch.view_as_real's float view (its last axis: real, imaginary); others as they are."""
    return torch.view_as_real(t) if torch.is_complex(t) else t


def _complex_state(state, real):
    """``state`` with the tensors an update wrote for the real view ``real`` of a complex param (its
    shape last) as complex tensors, the layout torch.optim keeps."""
    def back(t):
        like = torch.is_tensor(t) and t.dtype == real.dtype and t.shape[-real.ndim:] == real.shape
        return torch.view_as_complex(t) if like else t
    return {k: back(v) for k, v in state.items()}


def plain_group(group) -> dict:
    """The group with its 1-element tensor hyperparameters (``lr=torch.tensor(1e-3)``, a tensor in
    ``betas``) as the numbers they hold, which every path takes; the group itself when it has none."""
    def plain(value):
        if torch.is_tensor(value):
            return value.item()
        return tuple(map(plain, value)) if isinstance(value, tuple) else value
    tensors = any(torch.is_tensor(v) or isinstance(v, tuple) and any(map(torch.is_tensor, v))
                  for k, v in group.items() if k != "params")
    return {k: v if k == "params" else plain(v) for k, v in group.items()} if tensors else group


def check_fused(fused, foreach, params, at_step=False) -> None:
    """``fused=True`` runs torch's fused kernels (one pass over each tensor), which take dense
    floating-point tensors on the devices torch built them for. Params on the ``meta`` device pass
    at construction (as in torch.optim: a model built there gets its storage by ``to_empty``
    before it steps), not at a step."""
    if not fused:
        return
    if foreach:
        raise ValueError("fused=True and foreach=True are two different paths; pass only one (fused is the faster).")
    supported = torch.utils._foreach_utils._get_fused_kernels_supported_devices()
    allowed = supported if at_step else [*supported, "meta"]
    for p in params:
        if not (p.is_floating_point() or p.is_complex()) or p.device.type not in allowed:
            raise ValueError(f"fused=True takes floating-point or complex params on {', '.join(supported)}; "
                             f"got {p.dtype} on {p.device.type}. Use foreach=True instead.")


def fused_groups(*tensor_lists):
    """The lists split by (device, dtype) of the first one, as a fused kernel takes one of each;
    an empty list (a state the algorithm does not keep) stays empty in every split."""
    groups = {}
    for i, p in enumerate(tensor_lists[0]):
        groups.setdefault((p.device, p.dtype), []).append(i)
    for idx in groups.values():
        yield [[lst[i] for i in idx] if lst else [] for lst in tensor_lists]


class Optimizer(torch.optim.Optimizer):
    """Base class: subclasses define ``_init_state(p, group)`` and ``_update(...)``.

    ``_update(group, params, grads, states, foreach)`` receives the params of one group that
    have a gradient, their (already negated, under ``maximize``) gradients and their state
    dicts, and updates params and state in place. Classes with a fused path put ``fused`` in
    their defaults; ``_update`` reads it from the group.

    Complex params step as torch.optim steps them: as the real views of params, gradients and state
    (:func:`real_view`, each real and imaginary part a param of its own), so ``_init_state`` and
    ``_update`` see real tensors only; the state keeps complex tensors, torch.optim's layout.
    Classes whose algorithm is not defined on complex params set ``supports_complex = False``.
    """

    supports_complex = True

    def __init__(self, params, defaults, *, foreach=None, maximize=False, capturable=False, differentiable=False):
        # torch.optim's flags for CUDA-graph capture and autograd through the step: taken (False, their
        # default) so that code written for torch.optim runs unchanged; their paths are not ours.
        for flag, value in (("capturable", capturable), ("differentiable", differentiable)):
            if value:
                raise ValueError(f"{type(self).__name__}({flag}=True) is not supported: torch_opt's steps have no "
                                 f"{flag} path; use torch.optim's class for it, or {flag}=False.")
        super().__init__(params, {**defaults, "foreach": foreach, "maximize": maximize})

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_fused(group.get("fused"), group["foreach"], group["params"])

    def __setstate__(self, state):
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            if "fused" in self.defaults:  # state dicts saved before there was a fused path
                group.setdefault("fused", None)
        # torch.optim wrote each step as a Python number before 1.12 (the official AdaBound code
        # still does); the paths count in tensors (on the param's device where a fused kernel reads them).
        fused = {p for group in self.param_groups if group.get("fused") for p in group["params"]}
        for p, s in self.state.items():
            if "step" in s and not torch.is_tensor(s["step"]):
                s["step"] = torch.tensor(float(s["step"]), dtype=scalar_step_dtype(),
                                         device=p.device if p in fused else None)

    def _init_state(self, p, group) -> dict:
        raise NotImplementedError

    def _update(self, group, params, grads, states, foreach) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            group = plain_group(group)
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients; use dense "
                        "gradients (e.g. nn.Embedding(sparse=False)) or torch.optim.SparseAdam."
                    )
                if p.is_complex() and not self.supports_complex:
                    raise RuntimeError(f"{type(self).__name__} does not support complex parameters (as "
                                       f"torch.optim's); step torch.view_as_real(param) as a real param instead.")
                if not self.state[p]:
                    state = self._init_state(real_view(p), group)
                    self.state[p].update(_complex_state(state, real_view(p)) if p.is_complex() else state)
            check_fused(group.get("fused"), group["foreach"], params, at_step=True)
            foreach = group["foreach"]
            if foreach is None:
                foreach = default_foreach(params)
            grads = [real_view(p.grad) for p in params]
            if group["maximize"]:
                grads = torch._foreach_neg(grads) if foreach else [-g for g in grads]
            states = [self.state[p] for p in params]
            if not any(p.is_complex() for p in params):
                self._update(group, params, grads, states, foreach)
                continue
            views = [{k: real_view(v) if torch.is_tensor(v) else v for k, v in s.items()} for s in states]
            before = [dict(view) for view in views]
            self._update(group, [real_view(p) for p in params], grads, views, foreach)
            for p, state, view, old in zip(params, states, views, before):  # the entries the update (re)placed
                state.update(_complex_state({k: v for k, v in view.items() if v is not old.get(k)}, real_view(p)))
        return loss


class Wrapper(torch.optim.Optimizer):
    """An optimizer around another one (Lookahead, ApplyIfFinite) that shares its ``param_groups``,
    so lr schedulers, ``zero_grad`` and hooks act on the wrapper directly."""

    def __init__(self, optimizer):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(self).__name__} wraps a torch.optim.Optimizer, got {type(optimizer).__name__}.")
        # Optimizer.__init__ sets up hooks and bookkeeping; the group dicts it receives are the
        # inner optimizer's own, and the list itself is shared below.
        super().__init__(optimizer.param_groups, optimizer.defaults)
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups

    def __getstate__(self):
        # torch.optim pickles defaults, state and param_groups only: a copy would lose the inner
        # optimizer and the wrapper's settings and counters. (Pickle and deepcopy keep the shared
        # param_groups list and the params shared, within one copy.)
        return {**super().__getstate__(),
                **{name: value for name, value in self.__dict__.items() if not name.startswith("_")}}

    def _inner_step(self, closure=None):
        """The inner optimizer's step with its own step hooks, without torch.optim's global ones:
        those already run once around the wrapper's step, the one the user called."""
        inner = self.optimizer
        step = type(inner).step
        args, kwargs = (inner,) if closure is None else (inner, closure), {}
        for hook in inner._optimizer_step_pre_hooks.values():
            result = hook(inner, args, kwargs)
            if result is not None:
                args, kwargs = result
        out = getattr(step, "__wrapped__", step)(*args, **kwargs)
        inner._optimizer_step_code()
        for hook in inner._optimizer_step_post_hooks.values():
            hook(inner, args, kwargs)
        return out

    def add_param_group(self, param_group):
        if hasattr(self, "optimizer"):  # after __init__, groups belong to the inner optimizer
            self.optimizer.add_param_group(param_group)
        else:
            super().add_param_group(param_group)
