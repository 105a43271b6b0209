"""`fmnist record export` and `fmnist record check`: a study's record in git."""

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


def run_export(args) -> int:
    from fmnist import record

    name = Path(args.dest).name
    for readme in args.readme or []:  # every README is checked before anything is written
        problem = record.readme_problem(readme, name)
        if problem is not None:
            print(f"fmnist: {problem} (nothing was exported)", file=sys.stderr)
            return 2
    r = record.export(args.configfile, args.results, args.dest, published=args.published,
                      report=args.report)
    print(f"{args.dest}: {r['finished']} of {r['runs']} runs finished and recorded; tables rebuilt")
    headline = (Path(args.dest) / "headline.md").read_text()
    for readme in args.readme or []:
        blocks = record.update_readme_blocks(readme, name, args.dest)
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
