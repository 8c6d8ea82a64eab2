"""Lookahead around several inner optimizers: torch_opt.Lookahead, jax_opt.lookahead and the
NumPy transcription of Algorithm 1 (around the inner reference) agree."""

import numpy as np
import pytest

from . import harness as h
from .harness import run_lookahead
from .test_update_parity import tol


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(h.CASES))
def test_lookahead_parity(case, dtype, foreach):
    ours_torch, ours_jax, ref = run_lookahead(case, dtype, foreach)
    assert h.max_rel_error(ours_torch, ref) <= tol(case, dtype)
    assert h.max_rel_error(ours_jax, ref) <= tol(case, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", h.FUSED_CASES)
def test_lookahead_around_fused_parity(case, dtype):
    ours_torch, _, ref = run_lookahead(case, dtype, foreach=True, fused=True)
    assert h.max_rel_error(ours_torch, ref) <= tol(case, dtype)


def test_lookahead_differs_from_inner_alone():
    """Guard: the slow update really happens (k=5, alpha=0.6 moves the trajectory away)."""
    with_la, _, _ = run_lookahead("adam", np.float64, False)
    alone, _, _ = h.run_case("adam", 0.05)
    assert h.max_rel_error(with_la, alone) > 1e-3


def test_alpha_one_is_the_inner_optimizer():
    """alpha = 1 puts the slow weights on the fast ones: Lookahead does nothing (up to the
    rounding of ``s + (p - s)``)."""
    with_la, jax_la, _ = run_lookahead("adam", np.float64, False, alpha=1.0)
    alone, jax_alone, _ = h.run_case("adam", 0.05)
    assert h.max_rel_error(with_la, alone) <= 1e-15
    assert h.max_rel_error(jax_la, jax_alone) <= 1e-15
