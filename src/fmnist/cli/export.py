"""`fmnist export`: finished runs to TensorBoard event files and/or an MLflow store."""

from __future__ import annotations

import sys

from fmnist.cli.common import DEFAULT_CONFIG, load_config
from fmnist.config import REPO_ROOT, ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="finished runs to TensorBoard event files and/or an MLflow store "
                                      "(needs the [export] extra)")
    p.add_argument("--configfile", help=f"the study's config (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    p.add_argument("--results", default="results", help="the workflow's results directory (default results)")
    p.add_argument("--tensorboard", metavar="DIR", help="one folder of event files per run under DIR")
    p.add_argument("--mlflow", metavar="DIR", help="a local MLflow file store in DIR")
    p.add_argument("--mlflow-uri", metavar="URI", help="any MLflow tracking URI (sqlite:///mlflow.db, http://...)")
    p.add_argument("--mlflow-experiment", default="fmnist", help="MLflow experiment name (default fmnist)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Write the config's finished runs to TensorBoard event files and/or an MLflow store."""
    from fmnist import export

    if not (args.tensorboard or args.mlflow or args.mlflow_uri):
        raise ConfigError("nothing to export to: give --tensorboard DIR, --mlflow DIR or --mlflow-uri URI")
    cfg = load_config(args.configfile)
    runs = export.finished_runs(cfg, args.results)
    if not runs:
        print(f"fmnist: no finished run of this config in {args.results}/runs (run the study first)", file=sys.stderr)
        return 1
    try:
        if args.tensorboard:
            export.to_tensorboard(runs, args.tensorboard)
        for uri in filter(None, [args.mlflow and export.mlflow_uri_for(args.mlflow), args.mlflow_uri]):
            export.to_mlflow(runs, uri, experiment=args.mlflow_experiment)
    except export.ExportError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return 2
    return 0
