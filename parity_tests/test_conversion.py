"""The conversion API (``jax_train.checkpoints``, ``twinopt.convert``, ``torch_train.checkpoints``):
optimizer states of every key, Lookahead and lr schedules moved between the backends.

- Round trips are exact: a torch state converted to JAX and back is the same state, bit for bit.
- A run continued in the other backend after the conversion follows the uninterrupted run of the
  first backend (float64, 1e-12 relative: the update-level tolerance of SPEC.md), on both models.
- What does not fit is an error naming the entry: another optimizer, another model size, a
  missing entry, a Lookahead on one side only, params that stepped unequally.
"""

import copy
import functools

import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

import jax
import jax.numpy as jnp
import jax_opt
import torch_opt
from jax_train import checkpoints as jconvert
from jax_train import models as jm
from torch_train import checkpoints as tconvert
from torch_train import models as tm
from twinopt.convert import ConversionError
from twinopt.registry import INFO, KEYS, to_jax_kwargs
from twinopt.schedules import lr_factor

TOL = 1e-12
SIZES = {"mnist": {"hidden": (6, 5)}, "cifar": {"channels": (2, 3, 4), "dense": (5, 6)}}
K, M = 3, 4  # steps before and after the conversion
TOTAL = K + M
# Every key with weight decay, plus settings that change the state's entries.
CASES = {key: (key, {"weight_decay": 0.01}) for key in KEYS}
CASES |= {
    "sgd-momentum": ("sgd", {"momentum": 0.8, "dampening": 0.2}),
    "rmsprop-centered": ("rmsprop", {"momentum": 0.5, "centered": True}),
    "adamw-amsgrad": ("adamw", {"amsgrad": True}),
    "nadam-decoupled": ("nadam", {"weight_decay": 0.01, "decoupled_weight_decay": True}),
    "aggmo-4": ("aggmo", {"betas": (0.0, 0.5, 0.9, 0.99)}),
    "adabelief-amsgrad": ("adabelief", {"weight_decay": 0.01, "amsgrad": True, "rectify": False}),
}


@pytest.fixture(autouse=True)
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch.optim's scalar state follows it (SPEC.md)
    yield
    torch.set_default_dtype(previous)


def batch(dataset, step):
    rng = np.random.default_rng(100 + step)
    shape = (4, 28, 28, 1) if dataset == "mnist" else (4, 32, 32, 3)
    return rng.standard_normal(shape), rng.integers(0, 10, 4)


class Torch:
    def __init__(self, dataset, case, lookahead, schedule):
        key, kwargs = CASES[case]
        self.model = tm.build_model(dataset, 0, torch.float64, **SIZES[dataset])
        opt = torch_opt.OPTIMIZERS[key](self.model.parameters(), **kwargs)
        self.opt = torch_opt.Lookahead(opt, k=2, alpha=0.6) if lookahead else opt
        self.scheduler = None
        if schedule:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.opt, lambda step: lr_factor("cosine", step, TOTAL))

    def step(self, dataset, i):
        x, y = batch(dataset, i)
        self.opt.zero_grad()
        loss = F.cross_entropy(self.model(torch.tensor(x)), torch.tensor(y))
        loss.backward()
        self.opt.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.item()


class Jax:
    def __init__(self, dataset, case, lookahead, schedule):
        key, kwargs = CASES[case]
        self.graphdef, self.params = nnx.split(jm.build_model(dataset, 0, jnp.float64, **SIZES[dataset]))
        kwargs = to_jax_kwargs(key, kwargs)
        if schedule:
            base = kwargs.get("learning_rate", torch_opt.OPTIMIZERS[key](
                [torch.zeros(1, requires_grad=True)]).defaults["lr"])
            kwargs["learning_rate"] = lambda count: base * lr_factor("cosine", count, TOTAL, jnp)
        tx = jax_opt.OPTIMIZERS[key](**INFO[key].flax_kwargs, **kwargs)
        self.tx = jax_opt.lookahead(tx, sync_period=2, slow_step_size=0.6) if lookahead else tx
        self.state = self.tx.init(self.params)

    def step(self, dataset, i):
        x, y = batch(dataset, i)
        loss, grads = loss_and_grad(self.graphdef, self.params, jnp.asarray(x), jnp.asarray(y))
        updates, self.state = self.tx.update(grads, self.state, self.params)
        self.params = optax.apply_updates(self.params, updates)
        return float(loss)


@functools.partial(jax.jit, static_argnums=0)
def loss_and_grad(graphdef, params, x, y):
    """Jitted once per model for all cases (the optimizer's update runs op by op)."""

    def loss_fn(params):
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return jax.value_and_grad(loss_fn)(params)


def to_jax(t, j, key):
    """Move torch run ``t`` (weights, optimizer state, schedule) into the fresh JAX run ``j``."""
    model = nnx.merge(j.graphdef, j.params)
    jconvert.load_torch_state_dict(model, t.model.state_dict())
    j.params = nnx.state(model, nnx.Param)
    j.state = jconvert.opt_state_from_torch(j.params, j.state, t.opt.state_dict(), key, step=K)


def to_torch(j, t, key):
    """Move JAX run ``j`` into the fresh torch run ``t``."""
    t.model.load_state_dict(tconvert.to_tensors(jconvert.to_torch_state_dict(nnx.merge(j.graphdef, j.params))))
    t.opt.load_state_dict(tconvert.to_tensors(jconvert.opt_state_to_torch(j.params, j.state, t.opt.state_dict(), key)))
    if t.scheduler is not None:
        tconvert.advance_scheduler(t.scheduler, K)


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def weights_rel(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]) / np.max(np.abs(b[k])))) for k in b)


def torch_weights(t):
    return {k: v.numpy() for k, v in t.model.state_dict().items()}


def jax_weights(j):
    return jconvert.to_torch_state_dict(nnx.merge(j.graphdef, j.params))


def assert_same_state(got, want, where="state"):
    if torch.is_tensor(want):
        assert torch.is_tensor(got) and got.dtype == want.dtype, where
        np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=where)
    elif isinstance(want, dict):
        assert set(got) == set(want), (where, set(got) ^ set(want))
        for k in want:
            assert_same_state(got[k], want[k], f"{where}[{k!r}]")
    else:
        assert got == want, where


def without_empty(state_dict):
    """torch keeps an empty entry for a param whose step made no state (plain SGD); loading one
    or none is the same."""
    return {k: {i: s for i, s in v.items() if s} if k in ("state", "inner_state") else v
            for k, v in state_dict.items()}


VARIANTS = [(False, False), (True, False), (False, True), (True, True)]
VARIANT_IDS = ["plain", "lookahead", "schedule", "lookahead+schedule"]


@pytest.mark.parametrize("lookahead,schedule", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("case", CASES)
def test_torch_state_round_trip_is_exact(case, lookahead, schedule):
    key = CASES[case][0]
    t = Torch("cifar", case, lookahead, schedule)
    for i in range(K):
        t.step("cifar", i)
    j = Jax("cifar", case, lookahead, schedule)
    to_jax(t, j, key)
    back = Torch("cifar", case, lookahead, schedule)
    to_torch(j, back, key)
    assert_same_state(without_empty(back.opt.state_dict()), without_empty(t.opt.state_dict()))
    if schedule:
        assert back.scheduler.state_dict() == t.scheduler.state_dict()


@pytest.mark.parametrize("dataset,lookahead,schedule", [("mnist", False, False), ("cifar", True, True)],
                         ids=["mnist", "cifar-lookahead+schedule"])
@pytest.mark.parametrize("case", CASES)
def test_continue_in_the_other_backend(dataset, case, lookahead, schedule):
    key = CASES[case][0]
    straight_t, straight_j = Torch(dataset, case, lookahead, schedule), Jax(dataset, case, lookahead, schedule)
    want_t = [straight_t.step(dataset, i) for i in range(TOTAL)]
    want_j = [straight_j.step(dataset, i) for i in range(TOTAL)]
    # torch for K steps, then JAX
    t, j = Torch(dataset, case, lookahead, schedule), Jax(dataset, case, lookahead, schedule)
    got = [t.step(dataset, i) for i in range(K)]
    to_jax(t, j, key)
    got += [j.step(dataset, i) for i in range(K, TOTAL)]
    for want, weights in ((want_t, torch_weights(straight_t)), (want_j, jax_weights(straight_j))):
        assert rel(got, want) <= TOL
        assert weights_rel(jax_weights(j), weights) <= TOL
    # JAX for K steps, then torch
    j, t = Jax(dataset, case, lookahead, schedule), Torch(dataset, case, lookahead, schedule)
    got = [j.step(dataset, i) for i in range(K)]
    to_torch(j, t, key)
    got += [t.step(dataset, i) for i in range(K, TOTAL)]
    for want, weights in ((want_t, torch_weights(straight_t)), (want_j, jax_weights(straight_j))):
        assert rel(got, want) <= TOL
        assert weights_rel(torch_weights(t), weights) <= TOL
    assert abs(want_t[-1] - want_t[0]) > 1e-6  # guard: training moved


def stepped(case="adam", dataset="mnist", lookahead=False, steps=K):
    t = Torch(dataset, case, lookahead, False)
    for i in range(steps):
        t.step(dataset, i)
    return t


@pytest.mark.parametrize("jax_case,torch_case,message", [
    ("adamax", "adam", r"has state \['exp_avg_sq'\], which adamax does not keep: a state_dict of another optimizer"),
    ("momentum", "adam", r"which momentum does not keep"),
    ("adam", "amsgrad", r"the torch state has \['max_exp_avg_sq'\], which this JAX optimizer does not keep"),
    ("amsgrad", "adam", r"has no 'max_exp_avg_sq', which the JAX state needs for 1/nu_max/fc1/bias"),
    ("rmsprop-centered", "rmsprop", r"has no 'momentum_buffer'"),
])
def test_state_of_another_optimizer_is_named(jax_case, torch_case, message):
    t = stepped(torch_case)
    j = Jax("mnist", jax_case, False, False)
    with pytest.raises(ConversionError, match=message):
        jconvert.opt_state_from_torch(j.params, j.state, t.opt.state_dict(), CASES[jax_case][0])


def test_state_of_another_model_size_is_named():
    t = stepped()
    j = Jax("mnist", "adam", False, False)
    small = nnx.split(jm.build_model("mnist", 0, jnp.float64, hidden=(7, 5)))[1]
    with pytest.raises(ConversionError, match=r"1/mu/fc1/bias \(fc1.bias\): expected \(7,\) \(after any "
                                              r"leading axes\), got \(6,\): a state of another model size"):
        jconvert.opt_state_from_torch(small, jax_opt.adam().init(small), t.opt.state_dict(), "adam")
    with pytest.raises(ConversionError, match=r"1/mu/fc1/bias: expected \(7,\) \(after any leading axes\), "
                                              r"got \(6,\)"):
        jconvert.opt_state_to_torch(small, j.state, t.opt.state_dict(), "adam")
    cnn = Jax("cifar", "adam", False, False)
    with pytest.raises(ConversionError, match=r"the torch optimizer has 6 params, the model 12"):
        jconvert.opt_state_from_torch(cnn.params, cnn.state, t.opt.state_dict(), "adam")


def test_lookahead_on_one_side_only_is_an_error():
    j = Jax("mnist", "adam", True, False)
    with pytest.raises(ConversionError, match="the JAX optimizer is wrapped in Lookahead and the torch one is not"):
        jconvert.opt_state_from_torch(j.params, j.state, stepped().opt.state_dict(), "adam")
    with pytest.raises(ConversionError, match="the torch optimizer is wrapped in Lookahead and the JAX one is not"):
        jconvert.opt_state_to_torch(j.params, Jax("mnist", "adam", False, False).state,
                                    stepped(lookahead=True).opt.state_dict(), "adam")


def test_unequal_steps_and_missing_step_are_errors():
    t = stepped()
    state = copy.deepcopy(t.opt.state_dict())  # state_dict() shares the optimizer's per-param dicts
    state["state"][2]["step"] = torch.tensor(5.0)
    j = Jax("mnist", "adam", False, False)
    with pytest.raises(ConversionError, match=r"the params' steps differ \(\[3, 5\]\)"):
        jconvert.opt_state_from_torch(j.params, j.state, state, "adam")
    del state["state"][2]
    with pytest.raises(ConversionError, match=r"params \['fc2.weight'\] have no optimizer state while others have"):
        jconvert.opt_state_from_torch(j.params, j.state, state, "adam")
    with pytest.raises(ConversionError, match=r"the step counts differ"):
        jconvert.opt_state_from_torch(j.params, j.state, t.opt.state_dict(), "adam", step=4)
    m = stepped("momentum")
    jm_ = Jax("mnist", "momentum", False, False)
    with pytest.raises(ConversionError, match=r"does not record the number of steps.*pass step="):
        jconvert.opt_state_from_torch(jm_.params, jm_.state, m.opt.state_dict(), "momentum")


def test_fresh_states_convert_to_fresh_states():
    """Before the first step torch keeps no state; JAX's fresh state maps to none and back."""
    t, j = Torch("mnist", "momentum", True, False), Jax("mnist", "momentum", True, False)
    converted = jconvert.opt_state_to_torch(j.params, j.state, t.opt.state_dict(), "momentum")
    assert converted["state"] == {} and converted["inner_state"] == {} and converted["lookahead"]["step"] == 0
    back = jconvert.opt_state_from_torch(j.params, j.state, t.opt.state_dict(), "momentum")
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(j.state)):
        np.testing.assert_array_equal(a, b)
