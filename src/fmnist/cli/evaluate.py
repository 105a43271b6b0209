"""`fmnist evaluate RUN`: reload a finished run and test it again (fmnist.evaluate)."""

from __future__ import annotations

import json
from typing import Any

from fmnist.evaluate import DEFAULT_DATA, RUNS_DIR, evaluate_run


def add_parser(sub) -> Any:
    """Add the `evaluate` subcommand to an argparse subparsers object."""
    p = sub.add_parser(
        "evaluate",
        help="reload a finished run's model.pt and test it again: its test metrics against metrics.json",
    )
    p.add_argument("run", help="a run folder, or a run id under --runs-dir")
    p.add_argument("--runs-dir", default=str(RUNS_DIR), help="where run ids are looked up (default: results/runs)")
    p.add_argument("--data", default=str(DEFAULT_DATA),
                   help="the prepared data file (default: data/prepared/fashion_mnist.npz)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N, mps or auto")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    """`fmnist evaluate`: 0 when the recomputed test metrics equal metrics.json's, 1 when they differ
    (a run that cannot be evaluated raises EvaluateError, a ConfigError: the CLI prints it, exit 2)."""
    result = evaluate_run(args.run, args.data, args.device, args.runs_dir)
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "confusion_matrix"}, indent=2))
        return 0 if result["equal"] else 1
    rec = result["recorded"]
    print(f"{result['run_id']} on {result['device']} (amp {result['amp']}), {result['n_test']} test images")
    print(f"  {'':14s} {'now':>12s} {'metrics.json':>12s}")
    print(f"  {'test_accuracy':14s} {result['test_accuracy']:12.6f} {rec['test_accuracy']:12.6f}")
    print(f"  {'test_loss':14s} {result['test_loss']:12.6f} {rec['test_loss']:12.6f}")
    if result["equal"]:
        print("equal to metrics.json (accuracy and confusion matrix exactly, loss to float rounding)")
        return 0
    print("DIFFERENT from metrics.json: " + "; ".join(result["differences"])
          + (f" (the run trained on {rec['device']})" if rec.get("device") != result["device"] else ""))
    return 1
