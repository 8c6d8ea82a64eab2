"""torch_opt behaves as a torch.optim user expects: closure, maximize, sparse gradients,
params without gradients, foreach default, loading torch.optim state, Lookahead as an
Optimizer (schedulers, zero_grad, add_param_group)."""

import functools
import inspect

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import torch_opt
from twinopt.registry import INFO, KEYS


def model_and_data(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    return model, x, y


@pytest.mark.parametrize("key", KEYS)
def test_closure_is_evaluated_and_returned(key):
    model, x, y = model_and_data()
    opt = torch_opt.OPTIMIZERS[key](model.parameters(), lr=1e-2)
    calls = []

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        calls.append(loss.item())
        return loss

    losses = [opt.step(closure).item() for _ in range(30)]
    assert calls == losses
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("key", KEYS)
def test_maximize_equals_descent_on_negated_gradient(key, foreach):
    results = []
    for maximize in (False, True):
        torch.manual_seed(1)
        p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
        opt = torch_opt.OPTIMIZERS[key]([p], lr=1e-2, maximize=maximize, foreach=foreach)
        for i in range(20):
            g = torch.randn(5, dtype=torch.float64, generator=torch.Generator().manual_seed(i))
            p.grad = -g if maximize else g
            opt.step()
        results.append(p.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


@pytest.mark.parametrize("key", KEYS)
def test_sparse_gradient_is_refused_clearly(key):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = torch_opt.OPTIMIZERS[key](emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


@pytest.mark.parametrize("key", KEYS)
def test_params_without_grad_are_left_alone(key):
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = torch_opt.OPTIMIZERS[key]([a, b], lr=0.1)
    a.grad = torch.ones(3)
    for _ in range(2):  # ADOPT's first step only initialises its second moment
        opt.step()
    assert torch.equal(b, torch.ones(3)) and b not in opt.state and not torch.equal(a, torch.ones(3))


def test_foreach_defaults_to_per_tensor_on_cpu():
    p = torch.nn.Parameter(torch.ones(3))
    assert torch_opt.Adam([p]).param_groups[0]["foreach"] is None
    from torch_opt._base import default_foreach
    assert default_foreach([p]) is False


# The keys whose reference is torch.optim: its class with the key's presets.
TORCH_CLASSES = {
    key: functools.partial(getattr(torch.optim, info.reference.removeprefix("torch.optim.")), **info.presets)
    for key, info in INFO.items() if info.torch_reference
}


@pytest.mark.parametrize("key", list(TORCH_CLASSES))
def test_torch_optim_state_dict_loads_into_ours(key):
    """A run started with torch.optim continues with torch_opt on the same trajectory."""
    torch.set_default_dtype(torch.float64)
    try:
        finals = []
        for switch in (False, True):
            model, x, y = model_and_data()
            opt = TORCH_CLASSES[key](model.parameters(), lr=1e-2)
            for i in range(20):
                if i == 10 and switch:
                    ours = torch_opt.OPTIMIZERS[key](model.parameters(), lr=1e-2)
                    ours.load_state_dict(opt.state_dict())
                    opt = ours
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(x), y).backward()
                opt.step()
            finals.append([p.detach().clone() for p in model.parameters()])
        for a, b in zip(*finals):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    finally:
        torch.set_default_dtype(torch.float32)


def test_lookahead_is_an_optimizer_sharing_param_groups():
    model, x, y = model_and_data()
    inner = torch_opt.Adam(model.parameters(), lr=0.1)
    opt = torch_opt.Lookahead(inner, k=3)
    assert isinstance(opt, torch.optim.Optimizer) and opt.param_groups is inner.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        sched.step()
    assert inner.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)
    extra = torch.nn.Parameter(torch.ones(2))
    opt.add_param_group({"params": [extra], "lr": 0.5})
    assert inner.param_groups[-1]["params"] == [extra] and len(opt.param_groups) == 2
    with pytest.raises(ValueError, match="Not a Lookahead state_dict"):
        opt.load_state_dict(inner.state_dict())


FUSED_KEYS = [key for key in KEYS if "fused" in inspect.signature(torch_opt.OPTIMIZERS[key]).parameters]


def test_fused_exists_where_torch_has_a_kernel():
    assert FUSED_KEYS == ["sgd", "momentum", "nesterov", "adagrad", "adam", "amsgrad", "adamw"]


@pytest.mark.parametrize("key", FUSED_KEYS)
def test_fused_maximize_and_late_params_equal_foreach(key):
    """The fused path gives the foreach path's numbers (bit for bit, but Nesterov's ``g + m b``
    one rounding apart), also with ``maximize`` and with a param whose first step comes later
    than the others' (SGD's buffer is made then)."""
    results = []
    for path in ({"foreach": True}, {"fused": True}):
        torch.manual_seed(2)
        a, b = (torch.nn.Parameter(torch.randn(5, dtype=torch.float64)) for _ in range(2))
        opt = torch_opt.OPTIMIZERS[key]([a, b], lr=1e-2, weight_decay=0.1, maximize=True, **path)
        for i in range(12):
            gen = torch.Generator().manual_seed(i)
            a.grad = torch.randn(5, dtype=torch.float64, generator=gen)
            b.grad = torch.randn(5, dtype=torch.float64, generator=gen) if i >= 4 else None
            opt.step()
        results.append(torch.cat([a.detach(), b.detach()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-15 if key == "nesterov" else 0, atol=0)


def test_fused_refuses_foreach_and_non_float_params_clearly():
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="fused=True and foreach=True"):
        torch_opt.Adam([p], fused=True, foreach=True)
    opt = torch_opt.SGD([p], fused=True)
    with pytest.raises(ValueError, match="floating-point or complex params .* Use foreach=True"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(3, dtype=torch.int64), requires_grad=False)]})


def test_state_dict_saved_before_the_fused_path_loads():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch_opt.Adam([p])
    p.grad = torch.ones(3)
    opt.step()
    saved = opt.state_dict()
    del saved["param_groups"][0]["fused"]
    again = torch_opt.Adam([p])
    again.load_state_dict(saved)
    again.step()
    assert again.param_groups[0]["fused"] is None and again.state[p]["step"].item() == 2


def test_blocks_split_large_contiguous_cpu_tensors_only(monkeypatch):
    from torch_opt import _base

    monkeypatch.setattr(_base, "BLOCK", 5)
    a, b = torch.arange(12.0).reshape(4, 3), torch.zeros(4, 3)
    parts = list(_base.blocks(a, None, b))
    assert [len(x) for x, _, _ in parts] == [5, 5, 2] and all(none is None for _, none, _ in parts)
    for x, _, y in parts:
        y.copy_(x)  # views: writing a block writes the tensor
    assert torch.equal(b, a)
    assert [t.shape for t in next(_base.blocks(a.t(), b))] == [a.t().shape, b.shape]  # strided: whole
    assert len(list(_base.blocks(torch.zeros(5), torch.zeros(5)))) == 1


STEP_PATHS = [(key, path) for key in KEYS if INFO[key].torch_step for path in (
    {"foreach": False}, {"foreach": True},
    *([{"fused": True}] if "fused" in inspect.signature(torch_opt.OPTIMIZERS[key]).parameters else []))]


@pytest.mark.parametrize("key, path", STEP_PATHS,
                         ids=[f"{k}-{next(iter(p))}{p.get('foreach', '')}" for k, p in STEP_PATHS])
def test_a_state_dict_whose_steps_are_numbers_resumes(key, path):
    """torch.optim wrote each param's step as a Python number before 1.12, and users' checkpoints
    still hold them: loaded, the run continues on the trajectory it was on (the steps become
    tensors, as torch.optim's __setstate__ makes them)."""
    finals = []
    for old_form in (False, True):
        model, x, y = model_and_data()
        opt = torch_opt.OPTIMIZERS[key](model.parameters(), lr=1e-2, **path)
        for i in range(6):
            if i == 3:
                saved = opt.state_dict()
                if old_form:
                    saved["state"] = {k: {**s, "step": float(s["step"])} for k, s in saved["state"].items()}
                opt = torch_opt.OPTIMIZERS[key](model.parameters(), lr=1e-2, **path)
                opt.load_state_dict(saved)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        assert all(torch.is_tensor(s["step"]) and s["step"].item() == 6 for s in opt.state.values())
        finals.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*finals):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("copy", ["deepcopy", "pickle"])
@pytest.mark.parametrize("wrapper", ["lookahead", "apply_if_finite"])
def test_a_copied_wrapper_continues_as_the_original(wrapper, copy):
    """copy.deepcopy and pickle keep the inner optimizer, the settings and the counters of a
    Lookahead or ApplyIfFinite (torch.optim's __getstate__ alone keeps defaults, state and
    param_groups): the copy, stepped on its own params, follows the original."""
    import copy as copy_module
    import pickle

    def wrap(params):
        inner = torch_opt.Adam(params, lr=0.05)
        if wrapper == "lookahead":
            return torch_opt.Lookahead(inner, k=3, alpha=0.4)
        return torch_opt.ApplyIfFinite(inner, max_consecutive_errors=2)

    p = torch.nn.Parameter(torch.arange(4.0, dtype=torch.float64))
    opt = wrap([p])
    for i in range(4):
        p.grad = torch.full_like(p, float(i) - 1.5)
        opt.step()
    p2, opt2 = (copy_module.deepcopy((p, opt)) if copy == "deepcopy" else pickle.loads(pickle.dumps((p, opt))))
    assert type(opt2.optimizer) is torch_opt.Adam and opt2.param_groups is opt2.optimizer.param_groups
    assert opt2.param_groups[0]["params"][0] is p2
    for i in range(5):
        for param in (p, p2):
            param.grad = torch.full_like(param, 0.5 * i - 1.0)
        opt.step()
        opt2.step()
    torch.testing.assert_close(p2, p, rtol=0, atol=0)
    settings = [{k: v for k, v in o.state_dict().items() if k not in ("state", "inner_state")} for o in (opt, opt2)]
    assert settings[0] == settings[1] and len(settings[0]) > 1  # the wrapper's counters and settings


@pytest.mark.parametrize("key", FUSED_KEYS)
def test_fused_accepts_meta_params_until_they_step(key):
    """Deferred initialization, as torch.optim allows it: fused=True takes params on the meta
    device at construction (and gives their state_dict, a template for a checkpoint); a step
    while they are still there is refused clearly, where torch.optim raises too."""
    with torch.device("meta"):
        model = torch.nn.Linear(3, 2)
    opt = torch_opt.OPTIMIZERS[key](model.parameters(), lr=1e-2, fused=True)
    assert opt.state_dict()["param_groups"][0]["fused"] is True
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError,
                       match="fused=True takes floating-point or complex params on .*got torch.float32 on meta"):
        opt.step()


@pytest.mark.parametrize("wrapper", ["lookahead", "apply_if_finite", "nested"])
def test_step_hooks_fire_once_per_step_through_wrappers(wrapper):
    """torch.optim's global step hooks (register_optimizer_step_pre/post_hook) fire once per
    ``step()`` the user calls, as for any optimizer, not again for each wrapped optimizer; hooks
    registered on an inner optimizer itself still fire when it steps."""
    p = torch.nn.Parameter(torch.ones(3))
    inner = torch_opt.Adam([p], lr=0.1)
    calls = []
    inner.register_step_pre_hook(lambda opt, args, kwargs: calls.append(("inner pre", type(opt).__name__)))
    inner.register_step_post_hook(lambda opt, args, kwargs: calls.append(("inner post", type(opt).__name__)))
    opt = {"lookahead": lambda: torch_opt.Lookahead(inner, k=2),
           "apply_if_finite": lambda: torch_opt.ApplyIfFinite(inner, max_consecutive_errors=1),
           "nested": lambda: torch_opt.Lookahead(torch_opt.ApplyIfFinite(inner, max_consecutive_errors=1),
                                                 k=2)}[wrapper]()
    handles = [register_optimizer_step_pre_hook(
                   lambda o, args, kwargs: calls.append(("global pre", type(o).__name__))),
               register_optimizer_step_post_hook(
                   lambda o, args, kwargs: calls.append(("global post", type(o).__name__)))]
    try:
        for _ in range(3):
            p.grad = torch.ones_like(p)
            opt.step()
    finally:
        for handle in handles:
            handle.remove()
    outer = type(opt).__name__
    assert calls == [("global pre", outer), ("inner pre", "Adam"), ("inner post", "Adam"), ("global post", outer)] * 3


@pytest.mark.parametrize("key", KEYS)
def test_tensor_lr_steps_as_the_number_it_holds_on_every_path(key):
    """torch.optim takes ``lr=torch.tensor(...)``; every path of ours steps with it as with the float
    (before: a TypeError inside ``_foreach_addcdiv_`` for Adam, AdamW, Adamax and NAdam)."""
    cls = torch_opt.OPTIMIZERS[key]
    for path in [{"foreach": False}, {"foreach": True}] + ([{"fused": True}] if key in FUSED_KEYS else []):
        results = []
        for lr in (0.01, torch.tensor(0.01, dtype=torch.float64)):
            p = torch.nn.Parameter(torch.ones(4, 3, dtype=torch.float64))
            opt = cls([p], lr=lr, **path)
            for i in range(3):
                p.grad = torch.full_like(p, 0.3 * (i + 1))
                opt.step()
            results.append(p.detach().clone())
        torch.testing.assert_close(results[1], results[0], rtol=0, atol=0, msg=f"{key} {path}")
