"""Train the DeepOBS MNIST MLP or CIFAR-10 3c3d CNN with a jax_opt optimizer (Flax NNX).

    python train_jax.py -dataset mnist -optimizer adam -num_epochs 3
    python train_jax.py -num_epochs 100 -dataset cifar -num_train 16384 -data_dir ../shared/data

The training loop is ``jax_train/train.py``, its checkpoints ``jax_train/checkpoints.py``.
"""

import sys

from jax_train.train import main

if __name__ == "__main__":
    sys.exit(main())
