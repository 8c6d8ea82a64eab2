"""Compare every optimizer on MNIST and CIFAR-10: tune the learning rate on a validation split,
rerun the chosen one with several seeds, then tables and plots.

    python compare.py run -dataset mnist -data_dir ../shared/data -out results            # JAX, vmapped
    python compare.py run -dataset cifar -data_dir ../shared/data -out results -backend torch
    python compare.py report -out results                       # tables and plots from the records alone

The command lives in ``twinopt_cli/compare.py`` (installed as ``twinopt-compare``).
"""

import sys

from twinopt_cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
