"""Where optax has an optimizer of the same name, show whether its arithmetic is ours, how it
differs, and which of our settings (if any) reproduces it. Each "differs" case also checks
that the reproducing setting closes the gap, so the difference is the documented one."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_opt

from . import harness as h

TOL = 1e-12
LR = 0.01


def run(tx, steps=120, seed=1):
    rng = np.random.default_rng(seed)
    params = {"w": jnp.asarray(rng.standard_normal((6,))), "b": jnp.asarray(rng.standard_normal((3, 2)))}
    grads = [{k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in params.items()} for _ in range(steps)]
    state = tx.init(params)

    @jax.jit
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    out = [[np.asarray(params[k]) for k in sorted(params)]]
    for g in grads:
        params, state = step(params, state, g)
        out.append([np.asarray(params[k]) for k in sorted(params)])
    return out


SAME = {
    "adam": (jax_opt.adam(LR), optax.adam(LR)),
    "adamw": (jax_opt.adamw(LR, weight_decay=1e-2), optax.adamw(LR, weight_decay=1e-2)),
    "adamax": (jax_opt.adamax(LR), optax.adamax(LR)),
    "adadelta": (jax_opt.adadelta(1.0), optax.adadelta(1.0)),
    "sgd": (jax_opt.sgd(LR), optax.sgd(LR)),
    "momentum": (jax_opt.sgd(LR, momentum=0.9), optax.sgd(LR, momentum=0.9)),
    "nesterov": (jax_opt.sgd(LR, momentum=0.9, nesterov=True), optax.sgd(LR, momentum=0.9, nesterov=True)),
}

# name -> (ours with defaults, optax with defaults, ours set to reproduce optax, optax again)
DIFFERENT = {
    # optax.nadam keeps mu = b1 constant; torch's momentum schedule tends to b1 as
    # 0.96^(t * momentum_decay) -> 0: a large momentum_decay makes it exactly b1.
    "nadam": (jax_opt.nadam(LR), optax.nadam(LR), jax_opt.nadam(LR, momentum_decay=1e4), optax.nadam(LR)),
    # optax.amsgrad takes the max of the bias-corrected v; equal when b2 = 0 (no correction).
    "amsgrad": (jax_opt.amsgrad(LR), optax.amsgrad(LR), jax_opt.amsgrad(LR, b2=0.0), optax.amsgrad(LR, b2=0.0)),
    # optax.radam adds eps to sqrt(v_hat), torch to sqrt(v): equal with eps = 0.
    "radam": (jax_opt.radam(LR), optax.radam(LR), jax_opt.radam(LR, eps=0.0), optax.radam(LR, eps=0.0)),
    # optax.adagrad: eps inside the root, accumulator starting at 0.1.
    "adagrad": (jax_opt.adagrad(LR), optax.adagrad(LR),
                jax_opt.adagrad(LR, initial_accumulator_value=0.1, eps=0.0),
                optax.adagrad(LR, initial_accumulator_value=0.1, eps=0.0)),
    # optax.rmsprop: eps inside the root by default, decay 0.9 (torch alpha 0.99).
    "rmsprop": (jax_opt.rmsprop(LR), optax.rmsprop(LR), jax_opt.rmsprop(LR, alpha=0.9),
                optax.rmsprop(LR, decay=0.9, eps_in_sqrt=False)),
}


@pytest.mark.parametrize("name", list(SAME))
def test_same_arithmetic_as_optax(name):
    ours, theirs = SAME[name]
    assert h.max_rel_error(run(ours), run(theirs)) <= TOL


@pytest.mark.parametrize("name", list(DIFFERENT))
def test_documented_difference_and_reproducing_setting(name):
    ours, theirs, ours_set, theirs_set = DIFFERENT[name]
    # Beyond the parity tolerance by far (radam's eps placement moves it by ~1.6e-9 here).
    assert h.max_rel_error(run(ours), run(theirs)) > 100 * TOL
    assert h.max_rel_error(run(ours_set), run(theirs_set)) <= TOL
