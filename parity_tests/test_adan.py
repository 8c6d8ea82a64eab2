"""Adan's global-norm clipping (``max_grad_norm``), which the parity cases leave out: torch_opt
clips with the norm of every param group's gradients together, as the official code, and jax_opt
with the norm of what its transformation receives (under ``optax.multi_transform``, one group's).
On one group all three agree; on two, torch_opt and the reference do."""

import numpy as np
import pytest

import jax_opt
import torch_opt
from twinopt.registry import INFO, to_jax_kwargs

from . import harness as h

# The global norm of the harness's gradients is above 10 at every step and far below 1e3: 1.0 clips
# every step, 1e3 none.
MAX_GRAD_NORMS = [1.0, 1e3]


def tolerance(dtype):
    return INFO["adan"].tolerance[np.dtype(dtype).name]


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("max_grad_norm", MAX_GRAD_NORMS)
def test_one_group_clips_as_the_official_code_in_both_backends(max_grad_norm, dtype, foreach):
    params, grads = h.make_problem(dtype=dtype)
    params, grads = [h.flat(params)], [[h.flat(g)] for g in grads]
    kwargs = {"lr": 0.01, "weight_decay": 0.05, "max_grad_norm": max_grad_norm}
    with h.torch_default_dtype(dtype):
        ours_torch = h.trajectory(h.TorchStepper(lambda groups: torch_opt.OPTIMIZERS["adan"](groups, foreach=foreach),
                                                 params, [kwargs]), grads)
    ref = h.trajectory(h.reference_stepper("adan", params, [kwargs]), grads)
    ours_jax = h.trajectory(h.JaxStepper(jax_opt.OPTIMIZERS["adan"](**to_jax_kwargs("adan", kwargs)), params), grads)
    assert h.max_rel_error(ours_torch, ref) <= tolerance(dtype)
    assert h.max_rel_error(ours_jax, ref) <= tolerance(dtype)
    unclipped = h.trajectory(h.reference_stepper("adan", params, [{**kwargs, "max_grad_norm": 0.0}]), grads)
    assert (h.max_rel_error(unclipped, ref) > 1e-3) == (max_grad_norm == 1.0)  # the clipping acted, or not


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
def test_two_groups_clip_by_their_global_norm_with_the_last_groups_eps(foreach):
    """The norm is of both groups together; the eps added to it is group 1's (the official code
    reads ``group["eps"]`` after its loop), here 1e-2 against group 0's 1e-8."""
    params, grads = h.make_problem()
    groups = [{"lr": 0.01}, {"lr": 0.005, "betas": (0.9, 0.8, 0.95), "eps": 1e-2, "no_prox": True,
                             "weight_decay": 0.1}]
    with h.torch_default_dtype(np.float64):
        ours = h.trajectory(h.TorchStepper(
            lambda gs: torch_opt.OPTIMIZERS["adan"](gs, max_grad_norm=1.0, foreach=foreach), params, groups), grads)
    ref_groups = [{**g, "max_grad_norm": 1.0} for g in groups]
    ref = h.trajectory(h.reference_stepper("adan", params, ref_groups), grads)
    assert h.max_rel_error(ours, ref) <= tolerance(np.float64)
    # The reference with a third, empty group of eps 1e-8 last: the same run but for the eps in the
    # norm, to show that it mattered.
    params_3, grads_3 = [*params, []], [[*g, []] for g in grads]
    other = h.trajectory(h.reference_stepper("adan", params_3, [*ref_groups, {"eps": 1e-8, "max_grad_norm": 1.0}]),
                         grads_3)
    assert h.max_rel_error(other, ref) > 1e-6
