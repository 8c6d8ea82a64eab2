"""The two models: one NumPy initializer, identical forward/backward in PyTorch and Flax NNX, and exact
weight conversion between the two layouts."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from flax import nnx  # noqa: E402

from jax_train import models as jm  # noqa: E402
from jax_train.checkpoints import load_torch_state_dict, to_torch_state_dict  # noqa: E402
from torch_train import models as tm  # noqa: E402
from twinopt import models as spec  # noqa: E402

# (model, sizes): the DeepOBS defaults and a small custom size of each.
CONFIGS = [
    ("mnist_mlp", {}),
    ("mnist_mlp", {"hidden": (7, 5)}),
    ("cifar10_3c3d", {}),
    ("cifar10_3c3d", {"channels": (4, 5, 6), "dense": (9,)}),
]
IDS = ["mlp", "mlp-small", "cnn", "cnn-small"]


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def batch(model, n=8, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *spec.INPUT_SHAPES[model]))
    y = rng.integers(0, 10, n)
    return x, y


def both(model, sizes, seed=0, dtype="float64"):
    t = tm.build_model(model, seed, dtype=getattr(torch, dtype), **sizes)
    j = jm.build_model(model, seed, dtype=getattr(jnp, dtype), **sizes)
    return t, j


# ---- (a) the initializer -------------------------------------------------------------------------


@pytest.mark.parametrize("model,sizes", CONFIGS, ids=IDS)
def test_init_is_deterministic_per_seed_and_differs_across_seeds(model, sizes):
    a, b, c = (spec.init_params(model, s, **sizes) for s in (0, 0, 1))
    assert list(a) == list(b) == list(c)
    for k in a:
        assert a[k].dtype == np.float64
        np.testing.assert_array_equal(a[k], b[k])
        if k.endswith(".weight"):
            assert not np.array_equal(a[k], c[k]), k


@pytest.mark.parametrize("model,sizes", CONFIGS, ids=IDS)
def test_init_names_and_shapes_are_torch_state_dict(model, sizes):
    params = spec.init_params(model, 0, **sizes)
    full = spec.model_sizes(model, **sizes)
    reference = (tm.MLP if model == "mnist_mlp" else tm.CNN)(**full).state_dict()  # torch's own init
    assert list(params) == list(reference)
    assert {k: v.shape for k, v in params.items()} == {k: tuple(v.shape) for k, v in reference.items()}
    assert spec.param_count(params) == spec.param_count(reference) == sum(v.numel() for v in reference.values())


def test_default_sizes_match_deepobs():
    mlp, cnn = spec.init_params("mnist", 0), spec.init_params("cifar", 0)
    assert [mlp[f"fc{i}.weight"].shape for i in range(1, 5)] == [(1000, 784), (500, 1000), (100, 500), (10, 100)]
    assert spec.cnn_feature_shape() == (128, 3, 3)
    assert cnn["fc1.weight"].shape == (512, 1152)
    assert spec.param_count(mlp) == 1_336_610
    assert spec.param_count(cnn) == 895_210  # DeepOBS cifar10_3c3d


def test_mlp_init_is_truncated_normal():
    params = spec.init_params("mnist_mlp", 0)
    w = np.concatenate([v.ravel() for k, v in params.items() if k.endswith(".weight")])
    assert np.max(np.abs(w)) <= 0.06 + 1e-15
    assert np.max(np.abs(w)) > 0.0599  # re-drawn up to the bound, not rescaled into a narrower range
    assert np.sum(np.abs(w) == 0.06) == 0  # not clipped onto the bound
    # Normal truncated at 2 sigma: std = 0.03 * 0.8796; an untruncated normal would give 0.03.
    assert abs(w.std() / 0.03 - 0.87962566) < 0.005
    assert abs(w.mean()) < 1e-4
    for k, v in params.items():
        if k.endswith(".bias"):
            assert not v.any(), k


@pytest.mark.parametrize("sizes", [{}, {"channels": (4, 5, 6), "dense": (9,)}], ids=["default", "small"])
def test_cnn_init_is_glorot_uniform_with_tf_fans(sizes):
    params = spec.init_params("cifar10_3c3d", 0, **sizes)
    for k, v in params.items():
        if k.endswith(".bias"):
            assert not v.any(), k
            continue
        receptive = int(np.prod(v.shape[2:]))
        limit = np.sqrt(6.0 / ((v.shape[0] + v.shape[1]) * receptive))
        assert np.max(np.abs(v)) <= limit, k
        if v.size > 10_000:
            assert np.max(np.abs(v)) > 0.99 * limit, k
            assert abs(v.std() / (limit / np.sqrt(3)) - 1) < 0.02, k
    if not sizes:
        assert spec.glorot_limit(params["conv1.weight"].shape) == np.sqrt(6.0 / (5 * 5 * 3 + 5 * 5 * 64))
        assert spec.glorot_limit(params["fc1.weight"].shape) == np.sqrt(6.0 / (1152 + 512))


def test_model_sizes_are_checked():
    # Sizes of the other model are ignored, so a script can pass all of its size flags to either model.
    small = spec.init_params("cifar", 0, channels=(4, 5, 6), dense=(9,))
    ignored = spec.init_params("cifar", 0, channels=(4, 5, 6), dense=(9,), hidden=(5,))
    assert all(np.array_equal(small[k], ignored[k]) for k in small) and list(small) == list(ignored)
    assert spec.model_sizes("mnist", hidden=(5,), channels=(1, 2, 3), dense=(4,)) == {"hidden": (5,), "num_classes": 10}
    with pytest.raises(TypeError, match="hiden"):
        tm.build_model("mnist", 0, hiden=(5,))
    with pytest.raises(ValueError, match="channels"):
        spec.init_params("cifar", 0, channels=(4, 5))
    with pytest.raises(ValueError, match="unknown model"):
        spec.init_params("imagenet", 0)
    # None means default, so a CLI can pass every size to every model.
    assert spec.model_sizes("mnist", hidden=None, channels=None, dense=None) == spec.DEFAULT_SIZES["mnist_mlp"]


# ---- (b) same logits, (g) same gradients ---------------------------------------------------------


@pytest.mark.parametrize("model,sizes", CONFIGS, ids=IDS)
def test_same_logits_float64(model, sizes):
    t, j = both(model, sizes)
    x, _ = batch(model)
    with torch.no_grad():
        lt = t(torch.tensor(x)).numpy()
    lj = np.asarray(j(jnp.asarray(x)))
    assert lt.dtype == lj.dtype == np.float64
    assert lt.shape == lj.shape == (len(x), 10)
    assert rel(lj, lt) < 1e-12


@pytest.mark.parametrize("model,sizes", CONFIGS, ids=IDS)
def test_same_gradients_float64(model, sizes):
    t, j = both(model, sizes)
    x, y = batch(model)
    loss_t = F.cross_entropy(t(torch.tensor(x)), torch.tensor(y))
    loss_t.backward()

    def loss_fn(m):
        return optax.softmax_cross_entropy_with_integer_labels(m(jnp.asarray(x)), jnp.asarray(y)).mean()

    loss_j, grads = nnx.jit(nnx.value_and_grad(loss_fn))(j)  # jitted, as in training
    assert abs(float(loss_j) - loss_t.item()) <= 1e-12 * abs(loss_t.item())
    gj = to_torch_state_dict(j, grads)
    gt = {k: p.grad.numpy() for k, p in t.named_parameters()}
    assert list(gj) == list(gt)
    for k in gt:
        assert np.abs(gt[k]).max() > 0, k  # every layer gets a gradient (no vacuous comparison)
        assert rel(gj[k], gt[k]) < 1e-10, k


@pytest.mark.parametrize("model,sizes", CONFIGS, ids=IDS)
def test_float32_builds_hold_identical_weights(model, sizes):
    t, j = both(model, sizes, dtype="float32")
    sd_t = {k: v.numpy() for k, v in t.state_dict().items()}
    sd_j = to_torch_state_dict(j)
    for k in sd_t:
        assert sd_t[k].dtype == sd_j[k].dtype == np.float32
        np.testing.assert_array_equal(sd_j[k], sd_t[k], err_msg=k)
    x, _ = batch(model)
    with torch.no_grad():
        lt = t(torch.tensor(x, dtype=torch.float32)).numpy()
    lj = np.asarray(j(jnp.asarray(x, dtype=jnp.float32)))
    assert lj.dtype == np.float32
    assert rel(lj, lt) < 1e-4


def test_build_model_leaves_torch_rng_alone():
    before = torch.random.get_rng_state()
    tm.build_model("cifar", 0, channels=(4, 5, 6), dense=(9,))
    assert torch.equal(before, torch.random.get_rng_state())


def test_jax_float64_needs_x64():
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="x64"):
            jm.build_model("mnist", 0, dtype=jnp.float64, hidden=(3,))
    finally:
        jax.config.update("jax_enable_x64", True)


# ---- (c) conversion round trips, (d) the fc1 permutation -----------------------------------------


@pytest.mark.parametrize("model,sizes", CONFIGS, ids=IDS)
def test_flax_torch_flax_round_trip_is_exact(model, sizes):
    _, j = both(model, sizes)
    # Non-zero biases and params that are not init_params', so every entry is exercised.
    state = nnx.state(j, nnx.Param)
    rng = np.random.default_rng(7)
    nnx.update(j, jax.tree.map(lambda v: jnp.asarray(rng.standard_normal(v.shape), v.dtype), state))
    sd = to_torch_state_dict(j)
    other = jm.build_model(model, 1, dtype=jnp.float64, **sizes)
    load_torch_state_dict(other, sd)
    a, b = nnx.to_pure_dict(nnx.state(j, nnx.Param)), nnx.to_pure_dict(nnx.state(other, nnx.Param))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype == jnp.float64
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("model,sizes", CONFIGS, ids=IDS)
def test_torch_flax_torch_round_trip_is_exact(model, sizes):
    t, j = both(model, sizes, seed=1)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(3)
        for p in t.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    original = t.state_dict()
    load_torch_state_dict(j, original)  # tensors are accepted as they are
    back = to_torch_state_dict(j)
    assert list(back) == list(original)
    for k, v in original.items():
        np.testing.assert_array_equal(back[k], v.numpy(), err_msg=k)
    # ... and the converted model computes what the torch model computes.
    x, _ = batch(model)
    with torch.no_grad():
        assert rel(np.asarray(j(jnp.asarray(x))), t(torch.tensor(x)).numpy()) < 1e-12


def test_load_keeps_the_model_dtype():
    j = jm.build_model("mnist", 0, dtype=jnp.float32, hidden=(5,))
    load_torch_state_dict(j, spec.init_params("mnist", 1, hidden=(5,)))  # float64 in, float32 kept
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(nnx.state(j, nnx.Param)))


def test_fc1_flatten_order_matters():
    sizes = {"channels": (4, 5, 6), "dense": (9,)}
    t, j = both("cifar10_3c3d", sizes)
    x, _ = batch("cifar10_3c3d")
    with torch.no_grad():
        lt = t(torch.tensor(x)).numpy()
    assert rel(np.asarray(j(jnp.asarray(x))), lt) < 1e-12
    w = t.state_dict()["fc1.weight"].numpy()
    c, h, wd = spec.cnn_feature_shape(sizes["channels"])
    assert (c, h, wd) == (6, 3, 3)
    # The converted kernel is a genuine permutation of the plain transpose.
    kernel = np.asarray(j.fc1.kernel[...])
    assert not np.array_equal(kernel, w.T)
    np.testing.assert_array_equal(np.sort(kernel, axis=0), np.sort(w.T, axis=0))
    np.testing.assert_array_equal(kernel, w.reshape(-1, c, h, wd).transpose(2, 3, 1, 0).reshape(c * h * wd, -1))
    # Loading fc1 without the permutation gives other logits: the parity above is not vacuous.
    j.fc1.kernel[...] = jnp.asarray(w.T)
    assert rel(np.asarray(j(jnp.asarray(x))), lt) > 1e-3


def test_mlp_fc1_is_a_plain_transpose():
    _, j = both("mnist_mlp", {"hidden": (7, 5)})
    w = spec.init_params("mnist_mlp", 0, hidden=(7, 5))["fc1.weight"]
    np.testing.assert_array_equal(np.asarray(j.fc1.kernel[...]), w.T)


# ---- (e) SAME max-pooling ------------------------------------------------------------------------


def numpy_max_pool_same(x, window=3, stride=2):
    """NHWC reference with TF SAME semantics: pad the end with the odd pixel, with -inf."""
    (top, bottom), (left, right) = (spec.same_padding(n, window, stride) for n in x.shape[1:3])
    p = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=-np.inf)
    oh, ow = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    out = np.empty((x.shape[0], oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = p[:, i * stride:i * stride + window, j * stride:j * stride + window].max(axis=(1, 2))
    return out


def test_same_padding_formula():
    assert spec.same_padding(28, 3, 2) == (0, 1)
    assert spec.same_padding(12, 3, 2) == (0, 1)
    assert spec.same_padding(6, 3, 2) == (0, 1)
    assert spec.same_padding(7, 3, 2) == (1, 1)
    assert spec.same_padding(6, 5, 2) == (1, 2)
    assert spec.same_padding(5, 1, 2) == (0, 0)
    assert jax.lax.padtype_to_pads((6, 28), (5, 3), (2, 2), "SAME") == [(1, 2), (0, 1)]


@pytest.mark.parametrize("hw", [(7, 6), (6, 7), (4, 4), (28, 28), (5, 5)])
def test_same_max_pool_matches_numpy(hw):
    # All negative, so zero padding (or the wrong side) would show up at the border.
    x = -np.abs(np.random.default_rng(0).standard_normal((2, *hw, 3))) - 0.1
    ref = numpy_max_pool_same(x)
    out_j = np.asarray(jm.max_pool_same(jnp.asarray(x)))
    out_t = tm.max_pool_same(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert out_j.shape == out_t.shape == ref.shape == (2, -(-hw[0] // 2), -(-hw[1] // 2), 3)
    np.testing.assert_array_equal(out_j, ref)
    np.testing.assert_array_equal(out_t, ref)
    assert np.isfinite(ref).all() and (ref < 0).all()


def test_cnn_spatial_sizes():
    t = tm.build_model("cifar", 0, dtype=torch.float64)
    x = torch.zeros(1, 32, 32, 3, dtype=torch.float64).permute(0, 3, 1, 2)
    sizes = []
    for i in (1, 2, 3):
        x = F.relu(getattr(t, f"conv{i}")(x))
        sizes.append(x.shape[-1])
        x = tm.max_pool_same(x)
        sizes.append(x.shape[-1])
    assert sizes == [28, 14, 12, 6, 6, 3]


# ---- (f) conversion errors -----------------------------------------------------------------------


def test_load_wrong_size_names_the_entry():
    j = jm.build_model("mnist", 0, dtype=jnp.float64)
    before = to_torch_state_dict(j)
    wrong = spec.init_params("mnist", 0, hidden=(500, 500, 100))
    msg = r"fc1\.weight: expected \(1000, 784\), got \(500, 784\): a state_dict of another model size\?"
    with pytest.raises(ValueError, match=msg):
        load_torch_state_dict(j, wrong)
    after = to_torch_state_dict(j)  # nothing was set
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_load_missing_and_unexpected_keys():
    j = jm.build_model("cifar", 0, dtype=jnp.float64, channels=(4, 5, 6), dense=(9,))
    sd = to_torch_state_dict(j)
    del sd["fc2.bias"]
    sd["fc3.weight"] = np.zeros((10, 9))
    with pytest.raises(ValueError, match=r"missing keys \['fc2\.bias'\], unexpected keys \['fc3\.weight'\]"):
        load_torch_state_dict(j, sd)
    with pytest.raises(ValueError, match=r"fc1\.weight: expected \(9, 54\), got \(9, 96\)"):
        load_torch_state_dict(j, spec.init_params("cifar", 0, channels=(4, 5, 6), dense=(9,)) | {
            "fc1.weight": np.zeros((9, 96))})
    with pytest.raises(ValueError, match=r"conv1\.weight: expected \(4, 3, 5, 5\), got \(5, 5, 3, 4\)"):
        load_torch_state_dict(j, to_torch_state_dict(j) | {"conv1.weight": np.zeros((5, 5, 3, 4))})


# ---- backend isolation ---------------------------------------------------------------------------


@pytest.mark.parametrize("module,forbidden", [
    ("twinopt.models", ("jax", "torch", "flax")),
    ("torch_train.models", ("jax", "flax")),
    ("jax_train.models", ("torch",)),
    ("jax_train.checkpoints", ("torch",)),
    ("twinopt.convert", ("jax", "torch", "flax")),
    ("twinopt.runs", ("jax", "torch", "flax")),
    ("torch_train.checkpoints", ("jax", "flax")),
])
def test_backend_isolation(module, forbidden):
    import os
    import subprocess
    import sys

    code = f"import sys, {module}; print(sorted(m for m in {forbidden!r} if m in sys.modules))"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
