"""The PyTorch half of every feature, with jax_train's module names: models, the training loop
(train.py), its checkpoints and the torch end of a conversion from JAX (checkpoints.py), the
benchmarks' torch side (benchmarks.py), the comparison's sequential engine (comparison.py).
Imports torch, never jax."""
