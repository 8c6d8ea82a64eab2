"""jax_opt inside optax's machinery, checked against torch_opt doing the same by hand:
``optax.inject_hyperparams`` with the learning rate changed between steps (torch: the group's
lr changed at the same steps), ``optax.MultiSteps`` (torch: the mean of k gradients, one step
every k), ``optax.chain`` after an elementwise clip (torch: the clip applied to .grad)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jax_opt
import torch_opt
from twinopt.registry import KEYS, to_jax_kwargs

from . import harness as h
from .test_update_parity import F64_TOL

LR_CHANGES = {30: 0.5, 60: 3.0}  # step -> factor applied to the initial lr
# Rprop's lr is the initial step size, read at the first step only (as torch.optim.Rprop reads it): a
# later change changes nothing, in both backends.
LR_READ_ONCE = {"rprop"}


def problem(key):
    _, (kwargs, _) = h.case_kwargs(key, 0.05)
    params, grads = h.make_problem()
    return kwargs, h.flat(params), [h.flat(g) for g in grads]


def run_torch(key, kwargs, params, grads, every_k=1, clip=None, lr_changes=None):
    with h.torch_default_dtype(np.float64):
        tensors = [torch.tensor(p) for p in params]
        opt = torch_opt.OPTIMIZERS[key](tensors, **kwargs)
        acc = [torch.zeros_like(t) for t in tensors]
        out = []
        for i, gs in enumerate(grads):
            if lr_changes and i in lr_changes:
                opt.param_groups[0]["lr"] = kwargs["lr"] * lr_changes[i]
            for a, g in zip(acc, gs):
                a += torch.tensor(g)
            if (i + 1) % every_k == 0:
                for t, a in zip(tensors, acc):
                    t.grad = (a / every_k).clamp(-clip, clip) if clip else a / every_k
                    a.zero_()
                opt.step()
            out.append([t.numpy().copy() for t in tensors])
        return out


def run_jax(tx, params, grads, inject=False, lr=None):
    params = [jnp.asarray(p) for p in params]
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    out = []
    for i, gs in enumerate(grads):
        if inject and i in LR_CHANGES:
            state.hyperparams["learning_rate"] = jnp.asarray(lr * LR_CHANGES[i])
        params, state = step(params, state, [jnp.asarray(g) for g in gs])
        out.append([np.asarray(p) for p in params])
    return out


@pytest.mark.parametrize("key", KEYS)
def test_inject_hyperparams_learning_rate_change(key):
    kwargs, params, grads = problem(key)
    tx = optax.inject_hyperparams(jax_opt.OPTIMIZERS[key])(**to_jax_kwargs(key, kwargs))
    ours_jax = run_jax(tx, params, grads, inject=True, lr=kwargs["lr"])
    ours_torch = run_torch(key, kwargs, params, grads, lr_changes=LR_CHANGES)
    assert h.max_rel_error(ours_jax, ours_torch) <= F64_TOL
    constant = run_torch(key, kwargs, params, grads)
    if key in LR_READ_ONCE:
        assert h.max_rel_error(ours_torch, constant) == 0
    else:
        assert h.max_rel_error(ours_torch, constant) > 1e-6  # guard: the change mattered


@pytest.mark.parametrize("key", KEYS)
def test_multisteps_accumulates_like_torch(key):
    kwargs, params, grads = problem(key)
    # optax accumulates in float32 unless told otherwise.
    tx = optax.MultiSteps(jax_opt.OPTIMIZERS[key](**to_jax_kwargs(key, kwargs)), every_k_schedule=3,
                          accumulator_dtype=jnp.float64)
    ours_jax = run_jax(tx, params, grads[:99])
    ours_torch = run_torch(key, kwargs, params, grads[:99], every_k=3)
    assert h.max_rel_error(ours_jax, ours_torch) <= F64_TOL
    np.testing.assert_array_equal(ours_jax[0][0], params[0])  # no step before the 3rd gradient


@pytest.mark.parametrize("key", KEYS)
def test_chain_after_clip(key):
    kwargs, params, grads = problem(key)
    tx = optax.chain(optax.clip(0.5), jax_opt.OPTIMIZERS[key](**to_jax_kwargs(key, kwargs)))
    ours_jax = run_jax(tx, params, grads)
    ours_torch = run_torch(key, kwargs, params, grads, clip=0.5)
    assert h.max_rel_error(ours_jax, ours_torch) <= F64_TOL


def test_jit_and_eager_agree():
    kwargs, params, grads = problem("adabound")
    tx = jax_opt.adabound(**to_jax_kwargs("adabound", kwargs))
    p = [jnp.asarray(x) for x in params]
    state = tx.init(p)
    for gs in grads[:10]:
        updates, state = tx.update([jnp.asarray(g) for g in gs], state, p)
        p = optax.apply_updates(p, updates)
    jitted = run_jax(tx, params, grads[:10])[-1]
    for a, b in zip(p, jitted):
        # XLA fuses the jitted step differently: one rounding apart at most (1.3e-14 seen on the (130, 3) param).
        np.testing.assert_allclose(np.asarray(a), b, rtol=F64_TOL, atol=0)


@pytest.mark.parametrize("lookahead", [False, True], ids=["plain", "lookahead"])
@pytest.mark.parametrize("key", KEYS)
def test_state_buffers_can_be_donated(key, lookahead):
    """A jitted step donating params and state (as train_jax.py does) needs every state buffer
    to be its own: a tree of zeros shared by two moments made XLA refuse the donation."""
    tx = jax_opt.OPTIMIZERS[key]()
    if lookahead:
        tx = jax_opt.lookahead(tx)
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
    state = tx.init(params)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(3):
        params, state = step(params, state, jax.tree_util.tree_map(jnp.ones_like, params))
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(params))


def test_lookahead_takes_extra_args_and_passes_them_to_the_inner_transformation():
    """jax_opt.lookahead is an ``optax.GradientTransformationExtraArgs``: it stands where optax
    expects one (``value=loss`` for a line search, ...) and hands the extra arguments to its inner
    transformation, which receives them as it would alone."""
    seen = []

    def inner_update(updates, state, params=None, *, value=None, **extra):
        seen.append(value)
        return jax.tree_util.tree_map(lambda u: -0.1 * u, updates), state

    inner = optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), inner_update)
    tx = jax_opt.lookahead(inner, sync_period=2)
    assert isinstance(tx, optax.GradientTransformationExtraArgs)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for loss in (3.0, 2.0):
        updates, state = tx.update({"w": jnp.ones(3)}, state, params, value=jnp.asarray(loss), other="ignored")
        params = optax.apply_updates(params, updates)
    assert [float(v) for v in seen] == [3.0, 2.0]
    # An inner transformation without extra arguments ignores them, as optax.chain does.
    tx = jax_opt.lookahead(optax.sgd(0.1), sync_period=2)
    tx.update({"w": jnp.ones(3)}, tx.init(params), params, value=jnp.asarray(1.0))


def test_inject_hyperparams_around_lookahead_follows_the_plain_form():
    """``optax.inject_hyperparams(jax_opt.lookahead)``: sync_period and slow_step_size arrive as
    arrays (and can change between steps); the trajectory equals the plain lookahead's."""
    params = {"w": jnp.arange(3.0)}
    grads = [{"w": jnp.array([1.0, -2.0, 0.5]) * (i + 1)} for i in range(7)]
    plain = jax_opt.lookahead(jax_opt.adam(0.1), sync_period=3, slow_step_size=0.4)
    injected = optax.inject_hyperparams(jax_opt.lookahead)(jax_opt.adam(0.1), sync_period=3, slow_step_size=0.4)
    trajectories = []
    for tx in (plain, injected):
        p, state = params, tx.init(params)
        for g in grads:
            updates, state = jax.jit(tx.update)(g, state, p)
            p = optax.apply_updates(p, updates)
        trajectories.append(p["w"])
    np.testing.assert_array_equal(trajectories[1], trajectories[0])
    assert int(state.hyperparams["sync_period"]) == 3
