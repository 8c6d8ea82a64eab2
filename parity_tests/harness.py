"""Run the same gradient sequence through torch_opt, jax_opt and a reference, step by step.

Params are two param groups of several shapes (a scalar included); each group gets its own
hyperparameters. On the JAX side the groups are an ``optax.multi_transform`` over a dict
``{"g0": [...], "g1": [...]}``. Every runner returns the trajectory: one list of NumPy
arrays (the params after that step) per step.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

import jax_opt
import torch_opt
from twinopt import registry
from twinopt.registry import to_jax_kwargs


SHAPES = ([(5,), (4, 3), (130, 3)], [(2, 3, 2), ()])
GRAD_SCALES = ([1.0, 0.1, 0.5], [3.0, 1e-3])
# (130, 3), a matrix of more than 128 rows (Adafactor factors by shape; optax.adafactor from 128
# on), came later: it draws from a generator of its own, so that every other array is the one
# earlier measurements were made with.
OWN_GENERATOR = {(0, 2)}
STEPS = 120

# case id -> (key, hyperparameters of group 0, of group 1), torch names: every registry entry's
# cases (twinopt.registry.OptimizerInfo.cases).
CASES = registry.CASES


def load(target):
    """The class at a registry dotted path: ``torch.optim.Adam``, ``parity_tests.reference.AggMo``."""
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


def reference_name(key) -> str:
    info = registry.INFO[key]
    init = "".join(f" ({entry} per group)" for entry in info.reference_init)
    return f"{info.reference}{init}" if info.torch_reference else f"NumPy ({info.reference})"


def with_l2(cls):
    """torch.optim class ``cls``, which takes no weight decay (Rprop), with each group's
    ``weight_decay`` added to the gradients before its step: L2, ``g + wd * p``, torch.optim's
    convention, which torch_opt and jax_opt follow for such a key (every key takes a decay)."""

    class WithL2(cls):
        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None and group.get("weight_decay", 0) != 0:
                        p.grad = p.grad.add(p, alpha=group["weight_decay"])
            super().step()
            return loss

    WithL2.__name__ = WithL2.__qualname__ = f"{cls.__name__}WithL2"
    return WithL2


def torch_reference(key):
    """``make(param_groups, **kwargs)``: the key's torch.optim reference with its presets (and
    :func:`with_l2` where it takes no weight decay), each state entry of ``reference_init`` filled
    from its group's hyperparameter (torch.optim.Adagrad fills every accumulator from the
    constructor's initial_accumulator_value and ignores a group's own; ours, in both backends, use
    the group's)."""
    info = registry.INFO[key]
    cls = load(info.reference)
    if "weight_decay" not in inspect.signature(cls).parameters:
        cls = with_l2(cls)

    def make(param_groups, **kwargs):
        opt = cls(param_groups, **info.presets, **kwargs)
        for group in opt.param_groups:
            for p in group["params"]:
                for entry, hparam in info.reference_init.items():
                    value = group[hparam]  # torch.optim fills both parts of a complex accumulator
                    opt.state[p][entry].fill_(complex(value, value) if p.is_complex() else value)
        return opt

    return make


def case_kwargs(case, weight_decay):
    """The two groups' hyperparameters; with decay, group 1 gets twice group 0's."""
    key, g0, g1 = CASES[case]
    if weight_decay:
        g0, g1 = {**g0, "weight_decay": weight_decay}, {**g1, "weight_decay": 2 * weight_decay}
    elif key == "adamw":  # AdamW decays by default; "without decay" means weight_decay=0
        g0, g1 = {**g0, "weight_decay": 0.0}, {**g1, "weight_decay": 0.0}
    return key, [g0, g1]


def make_problem(seed=0, dtype=np.float64, steps=STEPS):
    """Initial params (two groups) and a random gradient sequence, as NumPy arrays."""
    rng, own = np.random.default_rng(seed), np.random.default_rng([seed, 1])

    def draw(group, i, scale=1.0):
        source = own if (group, i) in OWN_GENERATOR else rng
        return (scale * source.standard_normal(SHAPES[group][i])).astype(dtype)

    params = [[draw(g, i) for i in range(len(shapes))] for g, shapes in enumerate(SHAPES)]
    grads = [[[draw(g, i, scale) for i, scale in enumerate(scales)] for g, scales in enumerate(GRAD_SCALES)]
             for _ in range(steps)]
    return params, grads


def flat(groups):
    return [a for group in groups for a in group]


@contextlib.contextmanager
def torch_default_dtype(dtype):
    """torch.optim keeps scalar state in the default dtype: match it to the params (SPEC.md)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class TorchStepper:
    """Drive a torch optimizer built by ``make(param_groups)`` with given gradients."""

    def __init__(self, make, params, group_kwargs, scheduler=None):
        self.tensors = [[torch.tensor(a) for a in group] for group in params]
        self.opt = make([{"params": ts, **kw} for ts, kw in zip(self.tensors, group_kwargs)])
        self.scheduler = scheduler(self.opt) if scheduler else None

    def step(self, grads):
        for t, g in zip(flat(self.tensors), flat(grads)):
            t.grad = torch.tensor(g)
        self.opt.step()
        if self.scheduler:
            self.scheduler.step()

    def params(self):
        return [t.detach().numpy().copy() for t in flat(self.tensors)]

    def set_params(self, values):
        with torch.no_grad():
            for t, v in zip(flat(self.tensors), values):
                t.copy_(torch.tensor(v))


def has_fused(key) -> bool:
    """Whether torch_opt's class for ``key`` has a ``fused=True`` path."""
    return "fused" in inspect.signature(torch_opt.OPTIMIZERS[key]).parameters


FUSED_CASES = [case for case, (key, *_) in CASES.items() if has_fused(key)]


def torch_factory(key, backend="ours", foreach=None, fused=None):
    """``make(param_groups)`` for torch_opt (``ours``) or the reference torch.optim class."""
    if backend == "ours":
        path = {"fused": True} if fused else {"foreach": foreach}
        return functools.partial(torch_opt.OPTIMIZERS[key], **path)
    return functools.partial(torch_reference(key), foreach=foreach)


def jax_transform(key, group_kwargs, wrap=None):
    """``optax.multi_transform`` with one jax_opt optimizer per group; ``wrap`` maps each."""
    wrap = wrap or (lambda tx: tx)
    transforms = {
        f"g{i}": wrap(jax_opt.OPTIMIZERS[key](**to_jax_kwargs(key, kw))) for i, kw in enumerate(group_kwargs)
    }
    return optax.multi_transform(transforms, lambda p: {k: [k] * len(v) for k, v in p.items()})


class JaxStepper:
    """Drive an optax transformation over ``{"g0": [...], "g1": [...]}``, jitted."""

    def __init__(self, tx, params):
        self.tx = tx
        self.tree = {f"g{i}": [jnp.asarray(a) for a in group] for i, group in enumerate(params)}
        self.state = tx.init(self.tree)

        @jax.jit
        def step(tree, state, grads):
            updates, state = tx.update(grads, state, tree)
            return optax.apply_updates(tree, updates), state

        self._step = step

    def step(self, grads):
        grads = {f"g{i}": [jnp.asarray(g) for g in group] for i, group in enumerate(grads)}
        self.tree, self.state = self._step(self.tree, self.state, grads)

    def params(self):
        return [np.asarray(a) for a in flat(self.tree[k] for k in sorted(self.tree))]


def trajectory(stepper, grads):
    """The params before the first step and after every step."""
    out = [stepper.params()]
    for g in grads:
        stepper.step(g)
        out.append(stepper.params())
    return out


def max_rel_error(traj_a, traj_b):
    """Largest error relative to the reference's scale, over steps and tensors.

    Per tensor: ``max|a - b| / scale`` where ``scale`` is the largest ``|b|`` the tensor has
    had so far (trajectories start with the initial params). A tensor that decays through zero keeps the
    scale it had, so its error is not divided by a value that is only small by accident.
    """
    worst = 0.0
    scales = None
    for step_a, step_b in zip(traj_a, traj_b, strict=True):
        mags = [float(np.max(np.abs(b))) for b in step_b]
        scales = mags if scales is None else [max(s, m) for s, m in zip(scales, mags)]
        for a, b, scale in zip(step_a, step_b, scales, strict=True):
            err = np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
            worst = max(worst, float(err) / max(scale, np.finfo(np.float64).tiny))
    return worst


def reference_stepper(key, params, group_kwargs, foreach=False):
    info = registry.INFO[key]
    if not info.torch_reference:
        return load(info.reference)(params, [{**info.presets, **kw} for kw in group_kwargs])
    return TorchStepper(torch_factory(key, "torch", foreach), params, group_kwargs)


def run_case(case, weight_decay=0.0, dtype=np.float64, foreach=False, steps=STEPS, seed=0):
    """Trajectories of torch_opt, jax_opt and the reference for one case."""
    key, group_kwargs = case_kwargs(case, weight_decay)
    params, grads = make_problem(seed, dtype, steps)
    with torch_default_dtype(dtype):
        ours_torch = trajectory(TorchStepper(torch_factory(key, "ours", foreach), params, group_kwargs), grads)
        ref = trajectory(reference_stepper(key, params, group_kwargs, foreach), grads)
    ours_jax = trajectory(JaxStepper(jax_transform(key, group_kwargs), params), grads)
    return ours_torch, ours_jax, ref


# Schedules as (torch scheduler factory, optax schedule factory of the base lr); equal maps
# from step count to learning rate, in closed form on the optax side.
SCHEDULES = {
    "step": (
        lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5),
        lambda lr: optax.exponential_decay(lr, transition_steps=10, decay_rate=0.5, staircase=True),
    ),
    "cosine": (
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS),
        lambda lr: optax.cosine_decay_schedule(lr, decay_steps=STEPS),
    ),
}


class ScheduledReference:
    """A NumPy reference whose group lrs follow optax schedules, set before each step."""

    def __init__(self, ref, schedules):
        self.ref, self.schedules, self.count = ref, schedules, 0

    def step(self, grads):
        self.ref.set_lrs([float(s(self.count)) for s in self.schedules])
        self.ref.step(grads)
        self.count += 1

    def params(self):
        return self.ref.params()


def run_scheduled(case, schedule, dtype=np.float64, foreach=False, steps=STEPS):
    """Trajectories of torch_opt (+ torch scheduler), jax_opt (+ optax schedule), reference."""
    key, group_kwargs = case_kwargs(case, 0.05)
    params, grads = make_problem(0, dtype, steps)
    torch_sched, optax_sched = SCHEDULES[schedule]
    with torch_default_dtype(dtype):
        ours_torch = trajectory(
            TorchStepper(torch_factory(key, "ours", foreach), params, group_kwargs, torch_sched), grads)
        if not registry.INFO[key].torch_reference:
            ref_stepper = ScheduledReference(
                reference_stepper(key, params, group_kwargs), [optax_sched(kw["lr"]) for kw in group_kwargs])
        else:
            ref_stepper = TorchStepper(torch_factory(key, "torch"), params, group_kwargs, torch_sched)
        ref = trajectory(ref_stepper, grads)
    scheduled = [{**kw, "lr": optax_sched(kw["lr"])} for kw in group_kwargs]
    ours_jax = trajectory(JaxStepper(jax_transform(key, scheduled), params), grads)
    return ours_torch, ours_jax, ref


def run_lookahead(case, dtype=np.float64, foreach=False, k=5, alpha=0.6, fused=False):
    """Trajectories of Lookahead around the case's optimizer (with weight decay 0.05): torch_opt,
    jax_opt, and the NumPy Algorithm 1 around the inner reference. ``fused``: the inner optimizer's
    fused path."""
    key, group_kwargs = case_kwargs(case, 0.05)
    params, grads = make_problem(dtype=dtype)
    with torch_default_dtype(dtype):
        def make(groups):
            inner = torch_factory(key, "ours", foreach, fused)(groups)
            return torch_opt.Lookahead(inner, k, alpha, foreach=foreach)

        ours_torch = trajectory(TorchStepper(make, params, group_kwargs), grads)
        lookahead = load(registry.LOOKAHEAD_REFERENCE)
        ref = trajectory(lookahead(reference_stepper(key, params, group_kwargs), k, alpha), grads)
    ours_jax = trajectory(JaxStepper(jax_opt.lookahead(jax_transform(key, group_kwargs), k, alpha), params), grads)
    return ours_torch, ours_jax, ref
