"""What the generic suites do not reach in ADOPT and AdEMAMix: ADOPT's first step (it only sets the
second moment, and a state saved right after it resumes exactly), its clipping arguments in every
form, copies of the optimizer, and optax.contrib.ademamix computing our warmups given schedules."""

import copy
import io
import pickle

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jax_opt
import torch_opt
from twinopt.schedules import ademamix_alpha, ademamix_beta3

from . import harness as h
from .test_optax_differences import run
from .test_update_parity import F64_TOL


def half(step):
    """A custom ADOPT clipping value (module level, so that pickle can name it)."""
    return 0.5


def torch_trajectory(make, kwargs, steps=h.STEPS):
    params, grads = h.make_problem(steps=steps)
    with h.torch_default_dtype(np.float64):
        return h.trajectory(h.TorchStepper(make, params, [kwargs, kwargs]), grads)


def jax_trajectory(kwargs, steps=h.STEPS):
    params, grads = h.make_problem(steps=steps)
    tx = optax.multi_transform({group: jax_opt.OPTIMIZERS["adopt"](**kwargs) for group in ("g0", "g1")},
                               lambda p: {k: [k] * len(v) for k, v in p.items()})
    return h.trajectory(h.JaxStepper(tx, params), grads)


@pytest.mark.parametrize("decouple", [False, True], ids=["l2", "decoupled"])
def test_adopt_first_step_only_sets_the_second_moment_and_resumes_from_there(decouple):
    kwargs = {"lr": 0.01, "weight_decay": 0.1, "decouple": decouple}
    params, grads = h.make_problem()
    with h.torch_default_dtype(np.float64):
        first = h.TorchStepper(torch_opt.OPTIMIZERS["adopt"], params, [kwargs, kwargs])
        first.step(grads[0])
        for p0, p1, t in zip(h.flat(params), first.params(), h.flat(first.tensors)):
            np.testing.assert_array_equal(p1, p0)
            state = first.opt.state[t]
            g = t.grad if decouple else t.grad.add(t.detach(), alpha=0.1)
            assert state["step"].item() == 1 and not state["exp_avg"].any()
            torch.testing.assert_close(state["exp_avg_sq"], g * g, rtol=0, atol=0)
        buffer = io.BytesIO()
        torch.save(first.opt.state_dict(), buffer)
        buffer.seek(0)
        resumed = h.TorchStepper(torch_opt.OPTIMIZERS["adopt"], params, [kwargs, kwargs])
        resumed.opt.load_state_dict(torch.load(buffer, weights_only=True))
        rest = h.trajectory(resumed, grads[1:])
    np.testing.assert_equal(rest, torch_trajectory(torch_opt.OPTIMIZERS["adopt"], kwargs)[1:])
    jax_kwargs = {"learning_rate": 0.01, "weight_decay": 0.1, "decouple": decouple}
    after_one = jax_trajectory(jax_kwargs, steps=1)[1]
    np.testing.assert_equal(after_one, h.flat(params))


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_adopt_clipping_in_every_form(foreach):
    """``unclipped=True`` is ``clip_lambda=None``; a function and a number are both used, in both
    backends and the reference, and change the trajectory."""
    def torch_opt_with(**kw):
        return lambda groups: torch_opt.OPTIMIZERS["adopt"](groups, foreach=foreach, **kw)

    base = {"lr": 0.01}
    unclipped = torch_trajectory(torch_opt_with(), {**base, "unclipped": True})
    np.testing.assert_equal(torch_trajectory(torch_opt_with(clip_lambda=None), base), unclipped)
    np.testing.assert_equal(jax_trajectory({"learning_rate": 0.01, "clip_value_fn": None}),
                            jax_trajectory({"learning_rate": 0.01, "unclipped": True}))
    params, grads = h.make_problem()
    reference = h.trajectory(h.load("parity_tests.reference.ADOPT")(params, [{**base, "clip_lambda": half}] * 2), grads)
    for clip in (half, 0.5):
        assert h.max_rel_error(torch_trajectory(torch_opt_with(clip_lambda=clip), base), reference) <= F64_TOL
        assert h.max_rel_error(jax_trajectory({"learning_rate": 0.01, "clip_value_fn": clip}), reference) <= F64_TOL
    default = torch_trajectory(torch_opt_with(), base)
    assert h.max_rel_error(default, reference) > 1e-3 and h.max_rel_error(default, unclipped) > 1e-3


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_adopt_keeps_its_clip_lambda(how):
    """torch.optim pickles defaults, state and param groups only; ADOPT's clip_lambda lives beside them."""
    p = torch.nn.Parameter(torch.linspace(-1, 1, 5, dtype=torch.float64))
    opt = torch_opt.OPTIMIZERS["adopt"]([p], lr=0.1, clip_lambda=half)
    p2, opt2 = copy.deepcopy((p, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((p, opt)))
    assert opt2.clip_lambda is half
    for i in range(4):
        for q, o in ((p, opt), (p2, opt2)):
            q.grad = torch.full_like(q, (-2.0) ** i)
            o.step()
    torch.testing.assert_close(p2, p, rtol=0, atol=0)


def test_optax_ademamix_computes_our_warmups_given_schedules_of_the_1_based_step():
    """optax.contrib.ademamix evaluates its b3 and alpha schedules at the 0-based count, the official
    PyTorch code (and ours) at the 1-based step: schedules of ``count + 1.0`` close the gap (a float:
    the int32 count plus an int would divide in float32)."""
    b1, b3, alpha, t_b3, t_alpha = 0.9, 0.9999, 2.0, 50, 80
    ours = jax_opt.OPTIMIZERS["ademamix"](1e-2, beta3_warmup=t_b3, alpha_warmup=t_alpha, weight_decay=0.05)

    def theirs(shift):
        return optax.contrib.ademamix(1e-2, alpha=lambda c: ademamix_alpha(c + shift, alpha, t_alpha, jnp),
                                      b3=lambda c: ademamix_beta3(c + shift, b3, b1, t_b3, jnp), weight_decay=0.05)

    assert h.max_rel_error(run(theirs(1.0)), run(ours)) <= F64_TOL
    assert h.max_rel_error(run(theirs(0.0)), run(ours)) > 1e-6
