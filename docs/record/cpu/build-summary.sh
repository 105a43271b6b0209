#!/usr/bin/env bash
# Build the CPU record's summary.html with main's workflow from the record's finished runs.
#
# Usage, from main's checkout, once every run of the record has finished:
#   git worktree add ../fmnist-record-report HEAD
#   bash docs/record/cpu/build-summary.sh ../fmnist-record-report ../fmnist-record-b
#   python -m fmnist record export --configfile config/record_cpu.yaml --results ../fmnist-record-report/results \
#       --dest docs/record/cpu --readme README.md --readme docs/record/cpu/README.md \
#       --report ../fmnist-record-report/reports/summary.html
#
# Report B's runs: the four files of each from report B's worktree (model.pt dereferenced from its run
# cache). Report D's runs: the three files of each committed here. Their model.pt files were not kept
# (the record commits no weights, and report D's worktree is gone): an empty stand-in keeps Snakemake
# from training the run again, and the run's two plots are drawn here by the plot_run job's own
# functions (fmnist.plots), after checking its files as the report job does (integrity.check_run
# without the model), so no job ever reads a stand-in. Copied runs carry no Snakemake metadata, so
# Snakemake counts them as done and plans only the plots, tables and report.
set -euo pipefail
MAIN=$PWD
W=$(cd "$1" && pwd); B=$(cd "$2" && pwd)
PY=${PYTHON:-$MAIN/.venv/bin/python}
cd "$W"
rm -rf data results reports logs
cp -r "$B/data" data  # report B's prepared data, checked by the workflow when it parses
sleep 1                # the runs' files are newer than the data
mkdir -p results/runs
for d in "$MAIN"/docs/record/cpu/runs/*/; do
  r=$(basename "$d"); mkdir -p "results/runs/$r"
  cp "$d/metrics.json" "$d/history.csv" "$d/confusion.csv" "results/runs/$r/"
  if [ -e "$B/results/runs/$r/model.pt" ]; then
    cp -L "$B/results/runs/$r/model.pt" "results/runs/$r/"
  else
    : > "results/runs/$r/model.pt"
    PYTHONPATH="$W/src" "$PY" - "results/runs/$r" <<'PY'
import sys
from pathlib import Path

from fmnist import integrity, plots

d = Path(sys.argv[1])
m = integrity.check_run(d, model=False)
title = f"{m['run_id']} ({m['status']})"
plots.learning_curves(d / "history.csv", d / "curves.png", title=title, best_epoch=m["best_epoch"])
plots.confusion(d / "confusion.csv", d / "confusion.png", title=f"{m['run_id']}: test confusion matrix")
PY
    echo "stand-in model.pt, plots drawn here: $r"
  fi
done
SM="$(dirname "$PY")/snakemake"
if PYTHONPATH="$W/src" "$SM" -n --configfile config/record_cpu.yaml --cores 2 | grep -E "^ *(local)?rule train:" > /dev/null; then
  echo "a run would be trained: not every run of the record is here" >&2; exit 1
fi
PYTHONPATH="$W/src" "$SM" --configfile config/record_cpu.yaml --cores 2
