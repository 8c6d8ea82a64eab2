"""What the generic suites do not see of ASGD and Rprop: ASGD's averaged params (state, not
params), and how optax.rprop's updates relate to ours (the registry's note on that peer)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_opt
from twinopt.registry import INFO, to_jax_kwargs

from . import harness as h


def torch_averages(make, params, group_kwargs, grads):
    """The averaged params ``ax`` of a torch ASGD after every step, flat over the groups."""
    stepper = h.TorchStepper(make, params, group_kwargs)
    out = []
    for g in grads:
        stepper.step(g)
        out.append([stepper.opt.state[t]["ax"].numpy().copy() for t in h.flat(stepper.tensors)])
    return out


def jax_averages(params, group_kwargs, grads):
    """The same from jax_opt.asgd's state (``state[1].ax``), one transformation per group."""
    steppers = [h.JaxStepper(jax_opt.OPTIMIZERS["asgd"](**to_jax_kwargs("asgd", kw)), [group])
                for kw, group in zip(group_kwargs, params)]
    out = []
    for g in grads:
        for stepper, group_grads in zip(steppers, g):
            stepper.step([group_grads])
        out.append([np.asarray(a) for stepper in steppers for a in stepper.state[1].ax["g0"]])
    return out


@pytest.mark.parametrize("weight_decay", [0.0, 0.05], ids=["nodecay", "decay"])
def test_asgd_average_matches_torch_optim(weight_decay):
    """ax of torch_opt (both paths) and jax_opt follows torch.optim.ASGD's to 1e-12 (float64); in
    group 1 (t0 = 10) it is an average from step 12 on, in group 0 (t0 = 1e6) the params."""
    key, group_kwargs = h.case_kwargs("asgd", weight_decay)
    params, grads = h.make_problem()
    with h.torch_default_dtype(np.float64):
        ref = torch_averages(h.torch_factory(key, "torch"), params, group_kwargs, grads)
        ours = [torch_averages(h.torch_factory(key, "ours", foreach), params, group_kwargs, grads)
                for foreach in (False, True)]
        traj = h.trajectory(h.reference_stepper(key, params, group_kwargs), grads)[1:]
    for got in [*ours, jax_averages(params, group_kwargs, grads)]:
        assert h.max_rel_error(got, ref) <= INFO["asgd"].tolerance["float64"]
    group0 = len(params[0])
    for step, (ax, p) in enumerate(zip(ref, traj), 1):
        for i, (a, b) in enumerate(zip(ax, p)):
            if i < group0 or step <= 12:
                np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ref[-1][group0], np.mean([p[group0] for p in traj[11:]], axis=0), rtol=1e-12)
    assert not np.allclose(ref[-1][group0], traj[-1][group0])


def test_optax_rprop_returns_our_previous_update():
    """The registry's note on optax.rprop, exactly: its first update is zero, and each later one is
    ours of the step before, zeroed where the gradient's sign flips at this step (optax 0.2.8)."""
    rng = np.random.default_rng(3)
    params = jnp.asarray(rng.standard_normal(8))
    ours, theirs = jax_opt.OPTIMIZERS["rprop"](1e-2), optax.rprop(1e-2)
    ours_state, their_state = ours.init(params), theirs.init(params)
    previous, prev_grad = jnp.zeros(8), jnp.zeros(8)
    for _ in range(60):
        g = jnp.asarray(rng.standard_normal(8))
        update, ours_state = ours.update(g, ours_state, params)
        their_update, their_state = theirs.update(g, their_state, params)
        np.testing.assert_array_equal(their_update, jnp.where(g * prev_grad < 0, 0.0, previous))
        previous, prev_grad = update, ours_state[1].prev
    assert float(jnp.max(jnp.abs(update))) > 0

