"""Train the DeepOBS MNIST MLP or CIFAR-10 3c3d CNN with a torch_opt optimizer.

    python train_torch.py -dataset mnist -optimizer adam -num_epochs 3
    python train_torch.py -num_epochs 100 -dataset cifar -num_train 16384 -data_dir ../shared/data

The training loop is ``torch_train/train.py``, its checkpoints ``torch_train/checkpoints.py``.
"""

import sys

from torch_train.train import main

if __name__ == "__main__":
    sys.exit(main())
