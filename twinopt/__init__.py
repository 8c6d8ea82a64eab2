"""Backend-neutral code (NumPy only): the optimizer registry (``registry``), the validators both
backends call (``hparams``), and the backend-neutral half of every feature: data, models' specs,
the command line, run folders, conversion, benchmarks, the comparison, plots.

Nothing here imports JAX or PyTorch (``tests/test_layout.py`` checks every module), so either
backend can be installed alone.
"""
