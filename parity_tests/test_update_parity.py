"""Update-level parity: torch_opt, jax_opt and the reference follow the same trajectory.

Every case of ``harness.CASES`` (every optimizer key, some with several configurations),
with and without weight decay, two param groups with different hyperparameters, several
shapes, 120 steps of random gradients, every torch path (per-tensor, foreach, and fused where
the class has one).
"""

import functools

import numpy as np
import pytest

import torch_opt._base
from twinopt import registry

from . import harness as h

# The registry's default tolerances (twinopt.registry.TOLERANCE: why these numbers).
F64_TOL, F32_TOL = registry.TOLERANCE["float64"], registry.TOLERANCE["float32"]


def tol(case, dtype):
    """The tolerance the registry gives the case's key in ``dtype``."""
    return registry.INFO[h.CASES[case][0]].tolerance[np.dtype(dtype).name]


@functools.cache
def reference_and_jax(case, weight_decay, dtype):
    key, group_kwargs = h.case_kwargs(case, weight_decay)
    params, grads = h.make_problem(dtype=dtype)
    with h.torch_default_dtype(dtype):
        ref = h.trajectory(h.reference_stepper(key, params, group_kwargs), grads)
    ours_jax = h.trajectory(h.JaxStepper(h.jax_transform(key, group_kwargs), params), grads)
    return ref, ours_jax


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05], ids=["nodecay", "decay"])
@pytest.mark.parametrize("case", list(h.CASES))
def test_jax_matches_reference(case, weight_decay, dtype):
    ref, ours_jax = reference_and_jax(case, weight_decay, dtype)
    assert len(ref) == h.STEPS + 1
    assert h.max_rel_error(ours_jax, ref) <= tol(case, dtype)


def torch_error(case, weight_decay, dtype, foreach=None, fused=None):
    """torch_opt's trajectory on one path against the reference's: the largest relative error."""
    ref, _ = reference_and_jax(case, weight_decay, dtype)
    key, group_kwargs = h.case_kwargs(case, weight_decay)
    params, grads = h.make_problem(dtype=dtype)
    with h.torch_default_dtype(dtype):
        ours = h.trajectory(h.TorchStepper(h.torch_factory(key, "ours", foreach, fused), params, group_kwargs), grads)
    return h.max_rel_error(ours, ref)


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05], ids=["nodecay", "decay"])
@pytest.mark.parametrize("case", list(h.CASES))
def test_torch_matches_reference(case, weight_decay, dtype, foreach):
    assert torch_error(case, weight_decay, dtype, foreach=foreach) <= tol(case, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05], ids=["nodecay", "decay"])
@pytest.mark.parametrize("case", h.FUSED_CASES)
def test_torch_fused_matches_reference(case, weight_decay, dtype):
    assert torch_error(case, weight_decay, dtype, fused=True) <= tol(case, dtype)


@pytest.mark.parametrize("case", list(h.CASES))
def test_torch_blocked_per_tensor_path_matches_reference(case, monkeypatch):
    """The per-tensor path splits a large CPU tensor into blocks (``torch_opt._base.blocks``);
    with 5-element blocks every tensor of the problem is split, with a short last block."""
    monkeypatch.setattr(torch_opt._base, "BLOCK", 5)
    assert torch_error(case, 0.05, np.float64, foreach=False) <= tol(case, np.float64)


def test_trajectories_move():
    """Guard against a vacuous pass: every case moves every tensor by far more than the tolerance."""
    for case in h.CASES:
        ref, _ = reference_and_jax(case, 0.0, np.float64)
        for p0, p_end in zip(ref[0], ref[-1]):
            assert np.max(np.abs(p_end - p0)) > 1e-6, case
