"""The same learning-rate schedule on both sides (a torch scheduler stepped after every
optimizer step, the equal optax schedule) keeps the trajectories equal."""

import pytest

from . import harness as h
from .test_update_parity import tol


@pytest.mark.parametrize("schedule", list(h.SCHEDULES))
@pytest.mark.parametrize("case", list(h.CASES))
def test_scheduled_trajectories_agree(case, schedule):
    ours_torch, ours_jax, ref = h.run_scheduled(case, schedule)
    assert h.max_rel_error(ours_torch, ref) <= tol(case, "float64")
    assert h.max_rel_error(ours_jax, ref) <= tol(case, "float64")


def test_schedule_changes_the_trajectory():
    """Guard: the schedule is really applied (a constant-lr run ends elsewhere)."""
    _, scheduled, _ = h.run_scheduled("adam", "step")
    _, constant, _ = h.run_case("adam", 0.05)
    assert h.max_rel_error(scheduled, constant) > 1e-3
