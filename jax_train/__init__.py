"""The JAX half of every feature: Flax NNX models, the training loop (train.py), its checkpoints and
the conversion to and from torch's layouts (checkpoints.py), the benchmarks' JAX side
(benchmarks.py), the comparison's vmapped engine (comparison.py), the 2-D trajectories
(surfaces.py). Imports jax and flax, never torch."""
