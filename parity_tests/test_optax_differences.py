"""Where optax has an optimizer of the same name, show whether its arithmetic is ours, how it
differs, and which of our settings (if any) reproduces it. Each "differs" case also checks
that the reproducing setting closes the gap, so the difference is the documented one."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jax_opt
from twinopt import registry

from . import harness as h


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


# Every optax peer of the registry: (key, peer).
OPTAX_PEERS = {peer.target.removeprefix("optax.") + ("" if peer.target == f"optax.{key}" else f"-as-{key}"): (key, peer)
               for key, info in registry.INFO.items() for peer in info.peers_of("jax")}


def ours_and_theirs(key, peer, reproduce):
    """jax_opt's key and the optax function, each with the peer's settings if ``reproduce``."""
    ours = jax_opt.OPTIMIZERS[key](peer.lr, **(peer.ours if reproduce else {}))
    theirs = h.load(peer.target)(peer.lr, **peer.kwargs, **(peer.theirs if reproduce else {}))  # optax.contrib too
    return ours, theirs


@pytest.mark.parametrize("name", [name for name, (_, peer) in OPTAX_PEERS.items() if peer.rtol is not None])
def test_optax_peer_computes_our_updates_under_the_documented_setting(name):
    """A peer without settings computes our updates with the defaults; one with settings does not
    (beyond the parity tolerance by far: radam's eps placement moves it by ~1.6e-9 here), and
    does with them, so the difference is the documented one."""
    key, peer = OPTAX_PEERS[name]
    if peer.ours or peer.theirs:
        assert h.max_rel_error(*map(run, ours_and_theirs(key, peer, False))) > 100 * peer.rtol
    assert h.max_rel_error(*map(run, ours_and_theirs(key, peer, True))) <= peer.rtol


@pytest.mark.parametrize("name", [name for name, (_, peer) in OPTAX_PEERS.items() if peer.rtol is None])
def test_optax_peer_no_setting_reproduces_differs(name):
    """A peer declared another algorithm (rtol None: timed only, its note says how it differs) does
    differ from ours, far beyond rounding (optax.rprop: 4.2e-2 here)."""
    key, peer = OPTAX_PEERS[name]
    assert h.max_rel_error(*map(run, ours_and_theirs(key, peer, True))) > 1e-6
