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


def measure(runs):
    """Largest errors of torch_opt and jax_opt over ``runs(dtype)``, per dtype."""
    row = {}
    for dtype in (np.float64, np.float32):
        worst_torch = worst_jax = 0.0
        for ours_torch, ours_jax, ref in runs(dtype):
            worst_torch = max(worst_torch, h.max_rel_error(ours_torch, ref))
            worst_jax = max(worst_jax, h.max_rel_error(ours_jax, ref))
        row[np.dtype(dtype).name] = {"torch_opt": worst_torch, "jax_opt": worst_jax}
    return row


def plain(case):
    return lambda dtype: (h.run_case(case, wd, dtype, foreach) for wd in (0.0, 0.05) for foreach in (False, True))


def with_lookahead(case):
    return lambda dtype: (h.run_lookahead(case, dtype, foreach) for foreach in (False, True))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = {}
    print("| case | reference | torch_opt f64 | jax_opt f64 | torch_opt f32 | jax_opt f32 |")
    print("|---|---|---|---|---|---|")
    rows_to_run = [(case, h.reference_name(key), plain(case)) for case, (key, _, _) in h.CASES.items()]
    rows_to_run += [(f"lookahead({case})", f"NumPy Algorithm 1 around {h.reference_name(key)}", with_lookahead(case))
                    for case, (key, _, _) in h.CASES.items()]
    for name, ref, runs in rows_to_run:
        rows[name] = measure(runs)
        f64, f32 = rows[name]["float64"], rows[name]["float32"]
        print(f"| {name} | {ref} | {f64['torch_opt']:.1e} | {f64['jax_opt']:.1e} | "
              f"{f32['torch_opt']:.1e} | {f32['jax_opt']:.1e} |", flush=True)
    print(f"\n{h.STEPS} steps; plain rows: weight decay 0 and 0.05; lookahead rows (k=5, alpha=0.6): "
          f"weight decay 0.05; both torch paths (per-tensor, foreach); {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
