"""Test-session setup for tests/ and parity_tests/."""

import shutil
import tempfile

import jax

_CACHE = {}


def pytest_configure(config):
    # Many tests compile the same XLA programs again (each run of a training script jits its own
    # step): a compilation cache for this session turns those compiles into loads, roughly halving
    # the time of the resume tests. A fresh folder per session, removed at its end.
    _CACHE["dir"] = tempfile.mkdtemp(prefix="twinopt-xla-cache-")
    jax.config.update("jax_compilation_cache_dir", _CACHE["dir"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE.pop("dir", ""), ignore_errors=True)
