#!/usr/bin/env bash
# The CPU side of the one-call GPU check (docs/performance.md, "GPUs: the one-call check"): on a machine
# with this repository's venv and access to PyPI, put into the working tree what a bare GPU host lacks,
# and check that the tree plus the carry stays under the device tool's 64 MiB:
#   .whl/         cp312 manylinux wheels of Snakemake's closure (versions of this venv) and pytest's,
#                 less what the GPU host already has (torch, numpy, pandas, scipy, matplotlib, jinja2,
#                 PyYAML, requests, typing-extensions); no `pulp` (16 MB): the workflow runs with
#                 `--scheduler greedy` without it (fmnist.bench.common.snakemake_scheduler)
#   data_carry/   the four Fashion-MNIST IDX .gz files
# Then run:  run(command="bash tools/gpu-check.sh", carry=[".whl", "data_carry"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATASET=${FMNIST_DATASET_DIR:-/usr/share/datasets/fashion-mnist}
LIMIT=$((64 * 1024 * 1024))
PACKAGES="snakemake snakemake-interface-common snakemake-interface-executor-plugins
snakemake-interface-logger-plugins snakemake-interface-report-plugins snakemake-interface-scheduler-plugins
snakemake-interface-storage-plugins annotated-types argparse-dataclass conda-inject configargparse
connection-pool docutils dpath fastjsonschema gitdb gitpython greenlet humanfriendly immutables jsonschema
jsonschema-specifications jupyter-core nbformat platformdirs pydantic pydantic-core referencing rpds-py
smart-open smmap sqlalchemy sqlmodel tenacity throttler traitlets typing-inspection yte
attrs psutil tabulate wrapt
pytest pluggy iniconfig packaging pygments"

mkdir -p .whl data_carry
for name in $PACKAGES; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    norm=$(echo "$name" | tr '-' '_')
    if ls .whl/ 2>/dev/null | grep -qi "^${norm}-${version}-"; then continue; fi
    if ! "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux2014_x86_64 -d .whl "$name==$version" 2>/dev/null; then
        # no wheel on PyPI (connection-pool): build one from its sdist (pure Python)
        "$PY" -m pip wheel -q --no-deps -w .whl "$name==$version"
    fi
done
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    cp -p "$DATASET/$f" data_carry/
done

# what the device tool carries: tracked and untracked-but-not-ignored files, plus the carried paths
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -L -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
whl=$(du -sb .whl | cut -f1)
data=$(du -sb data_carry | cut -f1)
total=$((tree + whl + data))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "tree $(mib "$tree"), .whl $(mib "$whl") ($(ls .whl | wc -l) wheels), data_carry $(mib "$data"): $(mib "$total") of 64 MiB"
if [ "$total" -ge "$LIMIT" ]; then
    echo "over the device tool's 64 MiB carry limit: leave out what the GPU host has, or shrink the tree" >&2
    exit 1
fi
