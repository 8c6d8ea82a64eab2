"""Print the measured parity as a Markdown table: ``python -m parity_tests.report``.

For every case of the update-level suite: the largest relative error (see
``harness.max_rel_error``) of torch_opt (both paths) and of jax_opt against the reference,
over 120 steps, with and without weight decay, in float64 and float32.
"""

import argparse
import json
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from . import harness as h  # noqa: E402


def measure(case):
    row = {}
    for dtype in (np.float64, np.float32):
        worst_torch = worst_jax = 0.0
        for weight_decay in (0.0, 0.05):
            for foreach in (False, True):
                ours_torch, ours_jax, ref = h.run_case(case, weight_decay, dtype, foreach)
                worst_torch = max(worst_torch, h.max_rel_error(ours_torch, ref))
                worst_jax = max(worst_jax, h.max_rel_error(ours_jax, ref))
        row[np.dtype(dtype).name] = {"torch_opt": worst_torch, "jax_opt": worst_jax}
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = {}
    print("| case | reference | torch_opt f64 | jax_opt f64 | torch_opt f32 | jax_opt f32 |")
    print("|---|---|---|---|---|---|")
    for case, (key, _, _) in h.CASES.items():
        rows[case] = measure(case)
        ref = h.REFERENCE_NAMES[key]
        f64, f32 = rows[case]["float64"], rows[case]["float32"]
        print(f"| {case} | {ref} | {f64['torch_opt']:.1e} | {f64['jax_opt']:.1e} | "
              f"{f32['torch_opt']:.1e} | {f32['jax_opt']:.1e} |", flush=True)
    print(f"\n{h.STEPS} steps, weight decay 0 and 0.05, per-tensor and foreach paths; "
          f"{time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
