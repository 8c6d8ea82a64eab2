"""The optimizer trajectories on Rosenbrock and Rastrigin (twinopt/surfaces.py, jax_train/surfaces.py):
the functions' gradients, the vmapped runs against plain per-learning-rate runs, the tuning rule,
the saved file, the refusal to overwrite, and the plots rebuilt from the file without JAX."""

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax_train import surfaces as jax_surfaces
from twinopt import surfaces

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("nesterov", "adam+lookahead")
LRS = (1e-3, 1e-2, 1.0)  # 1.0 makes Nesterov diverge on Rosenbrock
STEPS = 20
TAU = 20 * math.pi  # Rastrigin: d/dv (v^2 - 10 cos(2 pi v)) = 2 v + 20 pi sin(2 pi v)


@pytest.mark.parametrize("name, point, value, grad", [
    ("rosenbrock", (1.0, 1.0), 0.0, (0.0, 0.0)),
    ("rosenbrock", (0.0, 0.0), 1.0, (-2.0, 0.0)),
    ("rosenbrock", (-1.0, 2.0), 104.0, (396.0, 200.0)),  # (-2 (1 - x) - 400 x (y - x^2), 200 (y - x^2))
    ("rastrigin", (0.0, 0.0), 0.0, (0.0, 0.0)),
    ("rastrigin", (0.25, -0.25), 0.125 + 20, (0.5 + TAU, -0.5 - TAU)),
])
def test_function_values_and_gradients(name, point, value, grad):
    fn = surfaces.SURFACES[name].fn
    with jax.enable_x64(True):
        got = jax.grad(lambda p: fn(p[0], p[1], jnp))(jnp.asarray(point))
    np.testing.assert_allclose(got, grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fn(*point, np), value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fn(*surfaces.SURFACES[name].minimum, np), 0.0, atol=1e-12)


def sequential_path(row, name, lr, steps):
    """One run of the plain (not injected, not vmapped, not compiled) optimizer, step by step."""
    surface = surfaces.SURFACES[name]
    grad = jax.jit(jax.grad(lambda p: surface.fn(p[0], p[1], jnp)))  # only the test function compiled: faster
    tx = jax_surfaces.optimizer(row, lr)
    params = jnp.asarray(surface.start)
    state, path = tx.init(params), [params]
    for _ in range(steps):
        updates, state = tx.update(grad(params), state, params)
        params = optax.apply_updates(params, updates)
        path.append(params)
    return np.stack(path)


@pytest.mark.parametrize("row", ROWS)
def test_vmapped_runs_equal_sequential_runs(row):
    paths = jax_surfaces.trajectories(row, "rosenbrock", LRS, STEPS)
    assert paths.shape == (len(LRS), STEPS + 1, 2) and paths.dtype == np.float64
    with jax.enable_x64(True):
        for lr, path in zip(LRS, paths):
            np.testing.assert_allclose(path, sequential_path(row, "rosenbrock", lr, STEPS), rtol=1e-12, atol=1e-12)


def test_a_bad_learning_rate_is_refused_before_tracing():
    with pytest.raises(ValueError, match="learning_rate"):
        jax_surfaces.trajectories("adam", "rosenbrock", (1e-3, -1.0), 2)


@pytest.fixture(scope="module")
def tiny():
    return jax_surfaces.run_all(STEPS, LRS, ROWS)


def test_tuning_excludes_diverged_runs(tiny):
    run = tiny["results"]["rosenbrock"]["nesterov"]
    assert run["final_values"][2] is None  # lr 1.0 overflowed
    assert run["lr"] != 1.0 and math.isfinite(run["value"])
    assert run["value"] == min(v for v in run["final_values"] if v is not None)
    assert np.allclose(run["path"][0], surfaces.SURFACES["rosenbrock"].start)


def test_tuning_rule():
    start, minimum = (-1.5, 2.0), (1.0, 1.0)
    paths = np.array([
        [start, (np.nan, np.nan), minimum],  # non-finite on the way: diverged
        [start, (5.0, 1.0), minimum],  # left the box on the way: diverged
        [start, (0.0, 0.0), (0.9, 0.81)],  # the best final value...
        [start, (0.5, 0.25), (0.9, 0.81)],  # ...tied, reached with smaller values on the way: chosen
        [start, start, (0.0, 0.0)],
    ])
    run = surfaces.tune("rosenbrock", "sgd", [1.0, 2.0, 3.0, 4.0, 5.0], paths)
    assert run["final_values"][:2] == [None, None]
    assert run["lr"] == 4.0 and run["value"] == pytest.approx(0.01)
    assert run["distance"] == pytest.approx(math.hypot(0.1, 0.19))
    with pytest.raises(ValueError, match="every learning rate diverged"):
        surfaces.tune("rosenbrock", "sgd", [1.0, 2.0], paths[:2])


def test_saved_run_is_reused_and_never_overwritten(tiny, tmp_path):
    surfaces.save(tiny, tmp_path)
    assert surfaces.saved_run(tmp_path, surfaces.settings(STEPS, LRS, ROWS)) == json.loads(json.dumps(tiny))
    with pytest.raises(SystemExit, match=r"other settings \(steps differ\); choose another -out"):
        surfaces.saved_run(tmp_path, surfaces.settings(STEPS + 1, LRS, ROWS))
    with pytest.raises(SystemExit, match="learning_rates, rows, steps differ"):
        jax_surfaces.main(["-out", str(tmp_path)])  # the default settings: refused before running anything
    (tmp_path / surfaces.FILE).unlink()
    (tmp_path / "rastrigin.png").write_bytes(b"a user's plot")
    with pytest.raises(SystemExit, match="rastrigin.png without the trajectories.json"):
        surfaces.saved_run(tmp_path, surfaces.settings(STEPS, LRS, ROWS))
    assert surfaces.saved_run(tmp_path / "new", surfaces.settings(STEPS, LRS, ROWS)) is None


def test_plots_rebuild_from_the_file_without_jax(tiny, tmp_path):
    file = surfaces.save(tiny, tmp_path / "run")
    code = ("import sys; sys.modules.update(jax=None, torch=None); from twinopt.surfaces import plot_from_file; "
            f"print(*plot_from_file({str(file)!r}, {str(tmp_path / 'plots')!r}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    pngs = [Path(p) for p in out.stdout.split()]
    assert [p.name for p in pngs] == ["rosenbrock.png", "rastrigin.png"]
    for png in pngs:
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 10_000
