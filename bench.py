"""Benchmarks: optimizer steps against every peer, their scaling, and training throughput.

    python bench.py step                  # every optimizer, 3 param sets, both backends
    python bench.py scaling               # step time against parameter count (1e4 to 1e8), a plot
    python bench.py train -data_dir ../shared/data
    python bench.py report                # rebuild the Markdown tables and the plot from the JSON

The command lives in ``twinopt_cli/bench.py`` (installed as ``twinopt-bench``).
"""

import sys

from twinopt_cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
