"""The commands that combine both backends: ``bench`` (the benchmarks) and ``compare`` (the
comparison of every optimizer). Each imports a backend's modules only when a command uses it.

The repository root's ``bench.py`` and ``compare.py`` run them, and so do the installed
distribution's ``twinopt-bench`` and ``twinopt-compare`` (or ``python -m twinopt_cli.bench``).
"""
