"""`fmnist record export`, `check`, `gpu` and `import`: a study's record in git, and runs trained on a
lent GPU brought into it as one archive (fmnist.record_gpu)."""

from __future__ import annotations

import sys
from pathlib import Path


def add_parser(sub) -> None:
    rec = sub.add_parser("record", help="a study's record in git: export finished runs, check its tables")
    rec = rec.add_subparsers(dest="record_command", required=True)
    p = rec.add_parser("export", help="copy finished runs' metrics/history and aggregate them")
    p.add_argument("--configfile", required=True, help="the study's config, e.g. config/record_cpu.yaml")
    p.add_argument("--results", default="results", help="the workflow's results directory")
    p.add_argument("--dest", required=True, help="the record directory, e.g. docs/record/cpu")
    p.add_argument("--published", help="published figures (default: the config's report.published)")
    p.add_argument("--report", help="the workflow's summary.html, copied once every run has finished")
    p.add_argument("--readme", action="append",
                   help="a README with <!-- record:NAME:start/end --> markers to update (NAME: dest's name); "
                        "give it once per README")
    p.set_defaults(func=run_export)
    p = rec.add_parser("check", help="rebuild a record's tables from its runs and compare")
    p.add_argument("--dest", required=True, help="the record directory")
    p.set_defaults(func=run_check)
    p = rec.add_parser("gpu", help="train the record's next unfinished runs packed on the GPU for --minutes, "
                                   "and archive the finished ones (one .tar.gz, the device named per run)")
    p.add_argument("--configfile", required=True, help="the record's config, e.g. config/record_cpu.yaml")
    p.add_argument("--record", help="the record directory (default: docs/record/NAME for config/record_NAME.yaml)")
    p.add_argument("--minutes", type=float, required=True, help="wall-clock minutes the training may take")
    p.add_argument("--out", required=True, help="directory for the archive, the workflow's folder and its log")
    p.add_argument("--gpus", type=int, default=1, help="GPUs to pack the runs on (--resources gpu=N)")
    p.add_argument("--cores", type=int, help="snakemake --cores (default: all)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cuda; cpu rehearses it (tests)")
    p.add_argument("--max-runs", type=int, help="take at most this many of the unfinished runs")
    p.set_defaults(func=run_gpu)
    p = rec.add_parser("import", help="add the runs of a `record gpu` archive to a record, checked")
    p.add_argument("archive", help="the .tar.gz that `record gpu` wrote")
    p.add_argument("--dest", required=True, help="the record directory, e.g. docs/record/cpu")
    p.set_defaults(func=run_import)


def run_gpu(args) -> int:
    from fmnist import record_gpu
    from fmnist.config import ConfigError

    record = args.record
    if record is None:
        stem = Path(args.configfile).stem
        if not stem.startswith("record_"):
            raise ConfigError(f"{args.configfile} is not named record_NAME.yaml: pass --record docs/record/NAME")
        record = Path("docs/record") / stem.removeprefix("record_")
    if args.minutes <= 0:
        raise ConfigError("record gpu: --minutes must be positive")
    r = record_gpu.chunk(args.configfile, record, args.out, args.minutes, gpus=args.gpus, cores=args.cores,
                         device=args.device, limit=args.max_runs)
    print(f"{len(r['finished'])} of {r['candidates']} unfinished runs trained in {r['seconds']}s"
          f"{' (time ran out)' if r['timed_out'] else ''}; archive: {r['archive']}")
    print(f"import it: python -m fmnist record import {r['archive']} --dest {record}")
    return 0


def run_import(args) -> int:
    from fmnist import record_gpu

    try:
        r = record_gpu.import_archive(args.archive, args.dest)
    except ValueError as exc:
        print(f"fmnist: {exc}", file=sys.stderr)
        return 2
    print(f"{args.dest}: imported {len(r['imported'])} runs trained on {', '.join(r['devices'])} "
          f"({r['host']}, commit {r['commit']}); SHA256SUMS and tables rebuilt")
    return 0


def run_export(args) -> int:
    from fmnist import record, record_readme

    name = Path(args.dest).name
    for readme in args.readme or []:  # every README is checked before anything is written
        problem = record_readme.readme_problem(readme, name)
        if problem is not None:
            print(f"fmnist: {problem} (nothing was exported)", file=sys.stderr)
            return 2
    r = record.export(args.configfile, args.results, args.dest, published=args.published,
                      report=args.report)
    print(f"{args.dest}: {r['finished']} of {r['runs']} runs finished and recorded; tables rebuilt")
    headline = (Path(args.dest) / "headline.md").read_text()
    for readme in args.readme or []:
        blocks = record_readme.update_readme_blocks(readme, name, args.dest)
        print(f"{readme}: the record's {', '.join(blocks)} block(s) updated")
    print(headline, end="")
    return 0


def run_check(args) -> int:
    from fmnist import record

    differ = record.check(args.dest)
    for line in differ:
        print(f"{args.dest}/{line}", file=sys.stderr)
    if differ:
        restore = ("edited after export", "but missing", "not the one its metrics.json recorded")
        hashes = [line for line in differ if any(words in line for words in restore)]
        if hashes:  # a run file is not what was recorded: the results changed, not the tables
            print(f"fix: restore the run files named above (git checkout -- {args.dest}/runs "
                  "or the run's own copy); a record's runs are added, never edited", file=sys.stderr)
        if len(hashes) < len(differ):
            print(f"fix: python -m fmnist record export ... --dest {args.dest} (or rebuild its tables "
                  "from its runs) and commit the result", file=sys.stderr)
        return 1
    print(f"{args.dest}: tables equal what its runs give, and every run file its recorded hash")
    return 0
