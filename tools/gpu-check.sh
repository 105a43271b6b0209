#!/usr/bin/env bash
# The one call a lent GPU machine runs (docs/performance.md, "GPUs: the one-call check"), on a bare host
# (Python 3.12 with torch, no Snakemake, no network) with the carry of tools/gpu-carry.sh:
#   run(command="bash tools/gpu-check.sh", carry=[".whl", "data_carry"], timeout_s=600)
# Steps, each under its own timeout, each writing its result to $OUT as soon as it ends:
#   1. install the carried wheels into /tmp/site (no index), copy the IDX files to the dataset path;
#   2. python -m fmnist bench gpu (the four goals, --budget BENCH_BUDGET seconds in all);
#   3. the GPU tests (pytest -k "cuda or graph": they skip without CUDA);
#   4. python -m fmnist record gpu: the record's next unfinished runs packed on the GPU for
#      RECORD_MINUTES, left as one archive for `python -m fmnist record import`.
# What comes back ($OUT, at most 8 files): summary.txt, bench_gpu.txt, bench_gpu.json, the record
# archive (if any run finished) and logs.tar.gz (every step's log, the dmon samples, the jobs' logs).
# SKIP_BENCH=1, SKIP_TESTS=1, SKIP_RECORD=1 leave a step out (e.g. a second call for the record only).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-check-out}
WORK=${WORK:-/tmp/fmnist-gpu-check}
PY=${PYTHON:-python3}
BENCH_BUDGET=${BENCH_BUDGET:-270}
TEST_TIMEOUT=${TEST_TIMEOUT:-90}
RECORD_MINUTES=${RECORD_MINUTES:-2.5}
RECORD_CONFIG=${RECORD_CONFIG:-config/record_cpu.yaml}
DATASET=${FMNIST_DATASET_DIR:-/usr/share/datasets/fashion-mnist}
mkdir -p "$OUT" "$WORK/logs"
rm -rf "$WORK/bench-gpu" "$WORK/record"
SUMMARY=$OUT/summary.txt
say() { echo "$*" | tee -a "$SUMMARY"; }
pack_logs() {  # everything but the summaries in one file (at most 8 files come back from $OUT)
    tar -czhf "$OUT/logs.tar.gz" -C "$WORK" --exclude='*/results' --exclude='*/cache' --exclude='*/data' \
        --exclude='*/.snakemake' logs $(cd "$WORK" && ls -d bench-gpu/dmon_*.txt bench-gpu/*/logs record/workflow.log 2>/dev/null) 2>/dev/null || true
}
: > "$SUMMARY"
say "gpu-check at $(date -u +%FT%TZ) on $(hostname), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
say "$(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_mode --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"

# 1. the carried wheels and the data
if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl > "$WORK/logs/install.log" 2>&1 \
        || say "wheel install failed (logs/install.log)"
    export PYTHONPATH=/tmp/site:$ROOT/src PATH=/tmp/site/bin:$PATH
else
    export PYTHONPATH=$ROOT/src
fi
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import pulp" 2>/dev/null; then  # Snakemake's ILP scheduler needs pulp; the greedy one does not
    mkdir -p "$WORK/profile" && echo "scheduler: greedy" > "$WORK/profile/config.yaml"
    export SNAKEMAKE_PROFILE=$WORK/profile
fi
if [ ! -f "$DATASET/train-images-idx3-ubyte.gz" ] && ls data_carry/*.gz >/dev/null 2>&1; then
    mkdir -p "$DATASET" && cp data_carry/*.gz "$DATASET/"
fi
say "$("$PY" -c 'import sys, torch; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda {torch.cuda.is_available()}")' 2>&1 | tail -1)"
say "$("$PY" -m snakemake --version 2>&1 | tail -1 | sed 's/^/snakemake /')"

# 2. bench gpu: the four goals, bounded by its own budget and, around it, by timeout
if [ -z "${SKIP_BENCH:-}" ]; then
    timeout -k 10 $((${BENCH_BUDGET%.*} + 60)) "$PY" -m fmnist bench gpu --out "$WORK/bench-gpu" \
        --budget "$BENCH_BUDGET" --raw "$DATASET" ${BENCH_ARGS:-} > "$WORK/logs/bench.log" 2>&1
    say "bench gpu: exit $?"
    cp "$WORK/bench-gpu/bench_gpu.txt" "$WORK/bench-gpu/bench_gpu.json" "$OUT/" 2>/dev/null
    cat "$WORK/bench-gpu/bench_gpu.txt" >> "$SUMMARY" 2>/dev/null
    pack_logs
fi

# 3. the GPU tests (they skip where CUDA is missing)
if [ -z "${SKIP_TESTS:-}" ]; then
    timeout -k 10 "$TEST_TIMEOUT" "$PY" -m pytest tests -q -p no:cacheprovider -k "cuda or graph" -m "not slow" \
        ${TEST_ARGS:-} > "$WORK/logs/tests.log" 2>&1
    say "gpu tests: exit $? ($(tail -1 "$WORK/logs/tests.log"))"
    pack_logs
fi

# 4. the record's next runs, packed on the GPU, into one archive
if [ -z "${SKIP_RECORD:-}" ]; then
    timeout -k 10 "$(awk -v m="$RECORD_MINUTES" 'BEGIN {print int(m * 60 + 90)}')" "$PY" -m fmnist record gpu \
        --configfile "$RECORD_CONFIG" --minutes "$RECORD_MINUTES" --out "$WORK/record" ${RECORD_ARGS:-} \
        > "$WORK/logs/record.log" 2>&1
    say "record gpu: exit $? ($(tail -2 "$WORK/logs/record.log" | head -1))"
    cp "$WORK"/record/record-*.tar.gz "$OUT/" 2>/dev/null && say "archive: $(cd "$OUT" && ls record-*.tar.gz)"
    pack_logs
fi
say "done at $(date -u +%FT%TZ)"
