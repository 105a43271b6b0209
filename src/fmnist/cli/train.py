"""`fmnist train`: train one run by hand: a run of a study by its id, or a resolved config (JSON)."""

from __future__ import annotations

import json
from pathlib import Path

from fmnist.cli.common import DEFAULT_CONFIG, load_config
from fmnist.config import REPO_ROOT, ConfigError

PREPARED_NAME = Path("prepared") / "fashion_mnist.npz"
SPLIT_KEYS = ("val_fraction", "split_seed", "train_limit", "test_limit")
"""What a prepared file's splits depend on: a run trains on the study's splits only when they agree."""


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one run by hand: a study's run by its id (--run), or a resolved "
                                     "config (--config)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", metavar="RUN_ID",
                      help="a run of the study in --configfile, by its id (`fmnist runs` lists them), resolved "
                           "as the workflow hands it to its train job")
    what.add_argument("--config", help="a resolved run (JSON from `runs --json`) or a metrics.json")
    p.add_argument("--configfile",
                   help=f"the study of --run (default {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    p.add_argument("--out", required=True, help="output directory for the run's files")
    p.add_argument("--data", help="the prepared file (default: the study's data.dir/prepared/fashion_mnist.npz "
                                  "with --run, else data/prepared/fashion_mnist.npz)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--log")
    p.set_defaults(func=run)


def run(args) -> int:
    from fmnist import train

    if args.run:
        run, splits = study_run(args.run, args.configfile)
        data = Path(args.data or Path(splits.pop("dir")) / PREPARED_NAME)
        source = f"the study in {args.configfile or DEFAULT_CONFIG.relative_to(REPO_ROOT)}"
    else:
        if args.configfile:
            raise ConfigError("--configfile goes with --run RUN_ID; a --config JSON is a resolved run already")
        given = json.loads(Path(args.config).read_text())
        run = given.get("config", given)  # also accepts a metrics.json, whose `data` says its splits
        splits = given.get("data") if "config" in given else None
        data = Path(args.data or Path("data") / PREPARED_NAME)
        source = args.config
    if splits is not None:
        check_splits(data, splits, source)
    train.train_run(run, data, args.out, device=args.device, threads=args.threads,
                    log=train.main_log(args.log))
    return 0


def study_run(run_id: str, configfile: str | None) -> tuple[dict, dict]:
    """The run `run_id` of a study, exactly as the workflow hands it to its train job (`amp: auto`
    resolved), and the study's data settings (dir and the split keys)."""
    from fmnist import gpus

    cfg = load_config(configfile)
    runs, _ = gpus.expand_for_jobs(cfg)
    if run_id not in runs:
        import difflib

        close = difflib.get_close_matches(run_id, list(runs), n=3)
        raise ConfigError(f"no run {run_id!r} in {configfile or DEFAULT_CONFIG.relative_to(REPO_ROOT)}"
                          + (f"; did you mean {', '.join(close)}?" if close else "")
                          + " (`fmnist runs --configfile ...` lists the study's runs)")
    return runs[run_id], {"dir": cfg["data"]["dir"], **{k: cfg["data"][k] for k in SPLIT_KEYS}}


def check_splits(data: Path, splits: dict, source: str) -> None:
    """Refuse a prepared file whose splits are not the ones `source` asks for (another train_limit,
    test_limit, val_fraction or split seed): the run would train and test on other images."""
    import numpy as np

    if not data.is_file():
        raise ConfigError(f"no prepared file {data}: prepare it for {source} "
                          f"(`fmnist prepare --configfile ... --out {data}`), or name one with --data")
    with np.load(data, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
    differ = {k: (meta.get(k), splits.get(k)) for k in SPLIT_KEYS if meta.get(k) != splits.get(k)}
    if differ:
        what = ", ".join(f"{k} {have!r} (wanted {want!r})" for k, (have, want) in differ.items())
        raise ConfigError(f"{data} was prepared with {what}, not the splits of {source}: prepare a file for "
                          f"them (`fmnist prepare --configfile ... --out OTHER.npz`) and pass --data OTHER.npz")
