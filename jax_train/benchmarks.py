"""JAX side of ``bench.py``: jax_opt against optax's function of the same name, each as one
jitted update + apply with params and state donated (their buffers are reused in place)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jax_opt
from jax_train.models import build_model
from twinopt import benchmarks, data, registry
from twinopt.models import INPUT_SHAPES, MODELS
from twinopt.registry import LOOKAHEAD_ALPHA, LOOKAHEAD_K, split_row

LR = 1e-3


def implementations(row):
    """``[(kind, name, transformation, params_wrapper)]`` for one row: ours, then the registry's
    optax peer of the key if it has one. optax.lookahead keeps its slow weights in the params
    (``LookaheadParams``)."""
    key, lookahead = split_row(row)
    ours = jax_opt.OPTIMIZERS[key](learning_rate=LR)
    if lookahead:
        ours = jax_opt.lookahead(ours, sync_period=LOOKAHEAD_K, slow_step_size=LOOKAHEAD_ALPHA)
    out = [("ours", "jax_opt jit", ours, None)]
    for peer in registry.INFO[key].peers_of("jax")[:1]:
        name = peer.target.removeprefix("optax.")
        tx = functools.reduce(getattr, name.split("."), optax)(LR, **peer.kwargs)  # optax.contrib.adopt too
        if lookahead:
            tx = optax.lookahead(tx, sync_period=LOOKAHEAD_K, slow_step_size=LOOKAHEAD_ALPHA)
            out.append(("peer", f"optax.lookahead({name}) jit", tx, _lookahead_params))
        else:
            out.append(("peer", f"optax.{name} jit", tx, None))
    return out


def _lookahead_params(params):
    """optax.lookahead's params: fast and slow weights, as separate buffers (both are donated)."""
    return optax.LookaheadParams(params, [jnp.copy(p) for p in params])


def _step_fn(tx):
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def make_params(shapes, seed=0):
    rng = np.random.default_rng(seed)
    params = [jnp.asarray(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
    grads = [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 1e-3) for s in shapes]
    return params, grads


def _stepper(tx, wrap, shapes):
    """A call that runs one donated step of ``tx`` on its own params and state, and waits for it."""
    params, grads = make_params(shapes)
    params = wrap(params) if wrap else params
    carry = [params, tx.init(params)]
    step = _step_fn(tx)

    def one():
        carry[:] = step(carry[0], carry[1], grads)
        jax.block_until_ready(carry)

    return one


def time_row(row, shapes, **timing):
    """``[(kind, impl, seconds per step, error)]`` for ours and optax on ``shapes``, timed in turn (as
    ``torch_train.benchmarks.time_row``)."""
    impls = implementations(row)
    steps, errors = benchmarks.runnable({(kind, name): _stepper(tx, wrap, shapes) for kind, name, tx, wrap in impls})
    medians = benchmarks.interleaved_medians(steps, **timing)
    return [(kind, name, medians.get((kind, name)), errors.get((kind, name))) for kind, name, _, _ in impls]


def triad_seconds(n, budget_s):
    # keep_unused: a is not read, and only an argument jit keeps can give its buffer to the result.
    triad = jax.jit(lambda a, b, c: b + 3.0 * c, donate_argnums=0, keep_unused=True)
    arrays = [jnp.zeros(n, jnp.float32), jnp.ones(n, jnp.float32), jnp.ones(n, jnp.float32)]

    def one():
        arrays[0] = triad(*arrays)
        arrays[0].block_until_ready()

    return benchmarks.median_time(one, budget_s=budget_s)


def matmul_gflops(n=2048):
    a, b = jnp.ones((n, n), jnp.float32), jnp.ones((n, n), jnp.float32)
    mm = jax.jit(jnp.matmul)
    return 2 * n**3 / benchmarks.median_time(lambda: mm(a, b).block_until_ready()) / 1e9


def conv_gflops():
    c = benchmarks.CONV
    x = jnp.ones((c["batch"], c["size"], c["size"], c["in_channels"]), jnp.float32)
    w = jnp.ones((c["kernel"], c["kernel"], c["in_channels"], c["out_channels"]), jnp.float32)
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "VALID",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    return benchmarks.conv_flops() / benchmarks.median_time(lambda: conv(x, w).block_until_ready()) / 1e9


def _textbook_step(dataset):
    """The Flax-example train step: value_and_grad and optax.adam in one jit, nothing donated."""
    graphdef, params = nnx.split(build_model(MODELS[dataset], seed=0))
    tx = optax.adam(LR)

    def loss_fn(params, x, y):
        logits = nnx.merge(graphdef, params)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, params, tx.init(params)


def train_flops_per_sample(dataset, batch_size):
    """FLOPs of one training step (forward, backward, update) as XLA counts them, per sample."""
    step, params, opt_state = _textbook_step(dataset)
    x = jnp.zeros((batch_size, *INPUT_SHAPES[MODELS[dataset]]), jnp.float32)
    y = jnp.zeros((batch_size,), jnp.int32)
    cost = step.lower(params, opt_state, x, y).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"] / batch_size


def textbook_samples_per_s(ds, dataset, batch_size):
    """A tutorial's loop: each batch put on the device when its step starts, the loss read
    every step (the host waits for the device each step)."""
    step, params, opt_state = _textbook_step(dataset)
    carry = [params, opt_state]

    def one(x, y):
        carry[0], carry[1], loss = step(carry[0], carry[1], jnp.asarray(x), jnp.asarray(y))
        float(loss)

    batches = data.train_batches(ds.x_train, ds.y_train, batch_size, epoch=1, seed=0, augment=dataset == "cifar")
    return benchmarks.timed_loop(batches, one)
