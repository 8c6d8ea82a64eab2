"""``python -m twinopt.data NAME [DATA_DIR] [--source S] [--num_train N]``: see :func:`_main`."""

from __future__ import annotations

import time

from .batches import DATASETS
from .sources import SOURCES, load_dataset


def _main(argv=None) -> int:  # pragma: no cover - a convenience: python -m twinopt.data mnist [data_dir]
    import argparse

    p = argparse.ArgumentParser(description="Load a dataset the way the training scripts do and describe it.")
    p.add_argument("name", choices=DATASETS)
    p.add_argument("data_dir", nargs="?")
    p.add_argument("--source", default="auto", choices=SOURCES)
    p.add_argument("--num_train", type=int)
    args = p.parse_args(argv)
    t = time.perf_counter()
    ds = load_dataset(args.name, args.data_dir, source=args.source, num_train=args.num_train)
    print(f"{ds.name}: train {ds.x_train.shape} test {ds.x_test.shape} in {time.perf_counter() - t:.2f} s")
    print(f"source: {ds.source}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_main())
