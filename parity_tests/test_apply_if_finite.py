"""torch_opt.ApplyIfFinite against optax.apply_if_finite: the same skip rule, counters and
trajectories on gradients with NaN/Inf; bare optimizers propagate NaN; exact resume; API."""

import io

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import jax_opt
import torch_opt

from . import harness as h

STEPS = 40
M = 2
# Bad steps: isolated ones, a run of exactly M (all skipped), and a run of 5 after which the
# last 3 are applied (notfinite_count 3, 4, 5 > M), poisoning one element of params each.
BAD = {3: np.nan, 7: np.inf, 8: -np.inf, 12: np.nan, 20: np.nan, 21: np.inf, 22: np.nan, 23: -np.inf, 24: np.nan,
       30: np.inf, 33: np.nan, 34: np.nan}
FIRST_FORCED = 22
CASES = ["sgd", "momentum", "adagrad", "adam", "radam", "adabound", "aggmo", "lookahead-adam"]


def bad_problem(bad=BAD, steps=STEPS):
    """The harness problem with one element of one gradient tensor set to NaN/Inf on bad steps."""
    params, grads = h.make_problem(steps=steps)
    rng = np.random.default_rng(1)
    for step, value in bad.items():
        group = grads[step][rng.integers(len(grads[step]))]
        i = rng.integers(len(group))
        group[i] = np.array(group[i])  # the scalar param's gradient is a NumPy scalar
        group[i][np.unravel_index(rng.integers(group[i].size), group[i].shape)] = value
    return params, grads


def factories(case, m, foreach=False):
    """(torch ``make(groups)``, optax transformation over the harness tree, group kwargs)."""
    key = case.removeprefix("lookahead-")
    _, group_kwargs = h.case_kwargs(key, 0.05)
    inner_tx = h.jax_transform(key, group_kwargs)

    def make(groups):
        opt = torch_opt.OPTIMIZERS[key](groups, foreach=foreach)
        if case.startswith("lookahead-"):
            opt = torch_opt.Lookahead(opt, 5, 0.6, foreach=foreach)
        return torch_opt.ApplyIfFinite(opt, m)

    if case.startswith("lookahead-"):
        inner_tx = jax_opt.lookahead(inner_tx, 5, 0.6)
    return make, optax.apply_if_finite(inner_tx, m), group_kwargs


def counters_torch(opt):
    return opt.notfinite_count, opt.last_finite, opt.total_notfinite


def counters_optax(state):
    return int(state.notfinite_count), bool(state.last_finite), int(state.total_notfinite)


def run_both(case, m=M, foreach=False):
    """Trajectories and per-step counters of both backends on the bad problem."""
    params, grads = bad_problem()
    make, tx, group_kwargs = factories(case, m, foreach)
    with h.torch_default_dtype(np.float64):
        ts = h.TorchStepper(make, params, group_kwargs)
        t_traj, t_count = [ts.params()], []
        for g in grads:
            ts.step(g)
            t_traj.append(ts.params())
            t_count.append(counters_torch(ts.opt))
    js = h.JaxStepper(tx, params)
    j_traj, j_count = [js.params()], []
    for g in grads:
        js.step(g)
        j_traj.append(js.params())
        j_count.append(counters_optax(js.state))
    return t_traj, t_count, j_traj, j_count


def finite_part(traj, ref):
    """Both trajectories with the elements that are not finite in ``ref`` zeroed, after checking
    that exactly the same elements are not finite in ``traj``."""
    out_a, out_b = [], []
    for step_a, step_b in zip(traj, ref, strict=True):
        for a, b in zip(step_a, step_b, strict=True):
            np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
        out_a.append([np.where(np.isfinite(a), a, 0.0) for a in step_a])
        out_b.append([np.where(np.isfinite(b), b, 0.0) for b in step_b])
    return out_a, out_b


@pytest.mark.parametrize("foreach", [False, True], ids=["single", "foreach"])
@pytest.mark.parametrize("case", CASES)
def test_parity_with_optax_apply_if_finite(case, foreach):
    t_traj, t_count, j_traj, j_count = run_both(case, foreach=foreach)
    assert t_count == j_count
    # Up to the first forced step nothing non-finite may reach the params, and the trajectories
    # agree as the plain parity tests demand.
    clean = FIRST_FORCED + 1  # trajectory entries: initial params, then after steps 0..FIRST_FORCED - 1
    assert all(np.isfinite(a).all() for step in t_traj[:clean] for a in step)
    assert h.max_rel_error(t_traj[:clean], j_traj[:clean]) <= 1e-12
    # The forced steps poison the same elements in both; the rest keeps agreeing.
    assert not all(np.isfinite(a).all() for a in t_traj[clean])
    assert h.max_rel_error(*finite_part(t_traj, j_traj)) <= 1e-12


def test_counters_and_skips_follow_optax_rule():
    """The rule spelled out: notfinite_count is updated first, and a bad step is applied iff
    notfinite_count > max_consecutive_errors, so a run of bad steps stays applied once past it."""
    *_, t_count, _, j_count = run_both("adam")
    bad = [s in BAD for s in range(STEPS)]
    run = [0] * STEPS
    for s in range(STEPS):
        run[s] = (run[s - 1] + 1 if s else 1) if bad[s] else 0
    total = np.cumsum(bad).tolist()
    assert t_count == j_count == [(run[s], not bad[s], total[s]) for s in range(STEPS)]
    assert [s for s in BAD if run[s] > M] == [22, 23, 24]


class Counting(torch.optim.Optimizer):
    """Counts the steps it is asked to take."""

    def __init__(self, params):
        super().__init__(params, {})
        self.count = 0

    def step(self, closure=None):
        self.count += 1


@pytest.mark.parametrize("m", [0, 1, 2, 4])
def test_inner_steps_taken_match_optax(m):
    finite = [True, False, True, False, False, False, False, False, True, False, False, True]
    counting_tx = optax.GradientTransformation(lambda p: jnp.zeros([], jnp.int32), lambda u, s, p=None: (u, s + 1))
    tx = optax.apply_if_finite(counting_tx, m)
    state = tx.init(jnp.zeros(2))
    p = torch.zeros(2, requires_grad=True)
    opt = torch_opt.ApplyIfFinite(Counting([p]), m)
    taken_jax, taken_torch = [], []
    for ok in finite:
        g = np.array([1.0, 1.0 if ok else np.nan])
        _, state = tx.update(jnp.asarray(g), state)
        p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        taken_jax.append(int(state.inner_state))
        taken_torch.append(opt.optimizer.count)
        assert counters_torch(opt) == counters_optax(state)
    assert taken_torch == taken_jax
    if m == 0:
        assert taken_torch[-1] == len(finite)  # m = 0 skips nothing, only counts


def test_skipped_step_leaves_inner_state_untouched():
    """ApplyIfFinite on the bad problem (never forced) is bit-identical to the bare optimizer on
    the problem with the bad steps removed: no moment, step count or slow weight moved."""
    params, grads = bad_problem()
    good = [g for s, g in enumerate(grads) if s not in BAD]
    _, group_kwargs = h.case_kwargs("adam", 0.05)

    def make(groups):
        return torch_opt.Lookahead(torch_opt.Adam(groups), 5, 0.6)

    with h.torch_default_dtype(np.float64):
        wrapped = h.TorchStepper(lambda g: torch_opt.ApplyIfFinite(make(g), 100), params, group_kwargs)
        bare = h.TorchStepper(make, params, group_kwargs)
        for g in grads:
            wrapped.step(g)
        for g in good:
            bare.step(g)
    for a, b in zip(wrapped.params(), bare.params()):
        np.testing.assert_array_equal(a, b)
    assert wrapped.opt.optimizer.lookahead_step == len(good)


@pytest.mark.parametrize("key", ["adam", "momentum"])
def test_bare_optimizers_propagate_nan(key):
    """Why ApplyIfFinite exists: one NaN gradient element makes that param NaN for good, in
    torch_opt, torch.optim, jax_opt and optax alike (their moments keep the NaN)."""
    params, grads = h.make_problem(steps=10)
    grads[2][0][0][1] = np.nan
    _, group_kwargs = h.case_kwargs(key, 0.0)
    optax_tx = optax.multi_transform(
        {f"g{i}": optax.adam(kw["lr"]) if key == "adam" else optax.sgd(kw["lr"], momentum=0.9)
         for i, kw in enumerate(group_kwargs)},
        lambda p: {k: [k] * len(v) for k, v in p.items()})
    with h.torch_default_dtype(np.float64):
        finals = [h.trajectory(h.TorchStepper(h.torch_factory(key, backend), params, group_kwargs), grads)[-1]
                  for backend in ("ours", "torch")]
        wrapped = h.trajectory(h.TorchStepper(
            lambda g: torch_opt.ApplyIfFinite(h.torch_factory(key)(g), 1), params, group_kwargs), grads)[-1]
    finals += [h.trajectory(h.JaxStepper(tx, params), grads)[-1] for tx in (h.jax_transform(key, group_kwargs),
                                                                            optax_tx)]
    for final in finals:
        assert np.isnan(final[0][1]) and np.isfinite(final[0][0]) and np.isfinite(final[1]).all()
    assert all(np.isfinite(a).all() for a in wrapped)


@pytest.mark.parametrize("inner", ["torch_opt", "torch.optim", "lookahead", "inside-lookahead"])
def test_state_dict_resume_is_exact(inner):
    """Stopped inside a run of bad steps (notfinite_count = 2), saved, loaded with
    weights_only=True into a fresh wrapper: the next step is forced as in the uninterrupted run,
    and every step after is bit-identical."""
    params, grads = bad_problem()
    _, group_kwargs = h.case_kwargs("adam", 0.05)

    def make(groups):
        opt = torch.optim.Adam(groups, foreach=False) if inner == "torch.optim" else torch_opt.Adam(groups)
        if inner == "inside-lookahead":  # Lookahead's state_dict carries the wrapper's counters
            return torch_opt.Lookahead(torch_opt.ApplyIfFinite(opt, M), 5, 0.6)
        return torch_opt.ApplyIfFinite(torch_opt.Lookahead(opt, 5, 0.6) if inner == "lookahead" else opt, M)

    def counters(opt):
        return counters_torch(opt.optimizer if inner == "inside-lookahead" else opt)

    stop = FIRST_FORCED
    with h.torch_default_dtype(np.float64):
        full = h.TorchStepper(make, params, group_kwargs)
        full_traj = h.trajectory(full, grads)
        first = h.TorchStepper(make, params, group_kwargs)
        h.trajectory(first, grads[:stop])
        assert counters(first.opt)[0] == 2
        buf = io.BytesIO()
        torch.save(first.opt.state_dict(), buf)
        buf.seek(0)
        saved = [[t.detach().numpy().copy() for t in group] for group in first.tensors]
        resumed = h.TorchStepper(make, saved, group_kwargs)
        resumed.opt.load_state_dict(torch.load(buf, weights_only=True))
        assert counters(resumed.opt) == (2, False, 6)
        rest = h.trajectory(resumed, grads[stop:])
    for a_step, b_step in zip(rest, full_traj[stop:], strict=True):
        for a, b in zip(a_step, b_step):
            np.testing.assert_array_equal(a, b)
    assert counters(resumed.opt) == counters(full.opt)


def test_is_an_optimizer_sharing_param_groups_and_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    unused = torch.nn.Parameter(torch.ones(2))  # grad stays None: ignored by the check
    inner = torch_opt.Adam([*model.parameters(), unused], lr=0.1)
    opt = torch_opt.ApplyIfFinite(inner, 0)
    assert isinstance(opt, torch.optim.Optimizer) and opt.param_groups is inner.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, calls = torch.randn(8, 3), []

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        calls.append(loss.item())
        return loss

    losses = [opt.step(closure).item() for _ in range(3)]
    for _ in range(3):
        sched.step()
    assert calls == losses  # the closure runs once a step
    assert opt.last_finite and opt.state is inner.state and inner.state[model.weight]["step"] == 3
    assert inner.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    extra = torch.nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [extra], "lr": 0.5})
    assert inner.param_groups[-1]["params"] == [extra]
    with pytest.raises(ValueError, match="Not an ApplyIfFinite state_dict"):
        opt.load_state_dict(inner.state_dict())


def test_closure_optimizer_lbfgs():
    """LBFGS re-evaluates the closure: it gets the checked evaluation first, then the real one."""
    p = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    opt = torch_opt.ApplyIfFinite(torch.optim.LBFGS([p], lr=1.0), 3)

    def closure():
        opt.zero_grad()
        loss = (p - 1.0).pow(2).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    torch.testing.assert_close(p.detach(), torch.ones(2))


def test_validation():
    p = torch.nn.Parameter(torch.zeros(2))
    for not_an_optimizer in ([p], optax.adam(1e-3)):
        with pytest.raises(TypeError, match="wraps a torch.optim.Optimizer"):
            torch_opt.ApplyIfFinite(not_an_optimizer, 2)
    with pytest.raises(TypeError, match="around an ApplyIfFinite"):
        torch_opt.ApplyIfFinite(torch_opt.ApplyIfFinite(torch_opt.SGD([p]), 2), 2)
    for bad in (-1, 1.5, 2.0, True, "2", None):
        with pytest.raises(ValueError, match="max_consecutive_errors"):
            torch_opt.ApplyIfFinite(torch_opt.SGD([p]), bad)
    assert torch_opt.ApplyIfFinite(torch_opt.SGD([p]), 0).max_consecutive_errors == 0


def test_sparse_gradients_are_checked():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = torch_opt.ApplyIfFinite(torch.optim.SparseAdam(emb.parameters()), 1)
    emb(torch.tensor([1, 2])).sum().backward()
    opt.step()
    before = emb.weight.detach().clone()
    emb.weight.grad = torch.sparse_coo_tensor([[4]], torch.tensor([[np.nan, 0.0, 0.0]]), (10, 3), check_invariants=True)
    opt.step()
    assert not opt.last_finite and torch.equal(emb.weight, before)
