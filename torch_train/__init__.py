"""PyTorch side of the training scripts: models, the training loop (train.py), its checkpoints and the torch
end of a conversion from JAX (checkpoints.py); imports torch, never jax."""
