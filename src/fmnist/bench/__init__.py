"""Benchmarks: fmnist's trainer against the reports' DataLoader loop, the speedrun recipe, and pipeline
overhead; one module per benchmark, each exporting its function under the benchmark's name here.

Every figure is a median over repetitions; the loops a benchmark compares alternate (a, b, a, b, ...)
so that load from other processes on the machine hits both alike and their ratio stays meaningful.

| module | measures |
| --- | --- |
| `throughput` | the trainer against the reports' loop (`ReferenceLoop`, the baseline), images/s |
| `speedrun` | the speedrun recipe through `train.setup_run`: wall time and test accuracy per seed |
| `dag` | `snakemake -n` on a study and one training job's start-up, by phase |
| `deform` | the fast CPU deformable convolution against torchvision's kernel |
| `steps` | ms per trainer step in several numerics and launch modes |
| `fused` | k seeds fused into one vmapped model against k trainer step loops |
| `gpu` | the one prepared call for a GPU machine: the four GPU goals |
| `gpuread` | what `gpu` reads and checks: slot lines, timestamped dmon samples, plan against runs |
| `amp` | a whole study in float32 and in bf16, paired run by run |
| `common` | default files, the data check, a resolved run, timing and workflow helpers |
"""

from fmnist.bench.amp import AMP_BENCH_FILE, AMP_MODES, amp, amp_config, amp_pairs, amp_table
from fmnist.bench.common import (
    DEFAULT_CONFIG,
    DEFAULT_DATA,
    FULL_CONFIG,
    SPEEDRUN_CONFIG,
    check_data,
    resolve_one,
)
from fmnist.bench.dag import dag, startup_cost
from fmnist.bench.deform import DEFORM_MODELS, deform
from fmnist.bench.fused import fused_seeds
from fmnist.bench.gpu import (
    GPU_BENCH_FILE,
    GPU_TABLE_FILE,
    Dmon,
    gpu,
    gpu_table,
    parse_dmon,
    require_cuda,
    sm_summary,
    write_gpu_result,
)
from fmnist.bench.gpuread import (
    concurrency,
    makespan_check,
    packed_speedup_measured,
    parse_dmon_timed,
    plan_vs_measured,
    side_by_side_during,
    slot_intervals,
    sm_over_window,
)
from fmnist.bench.speedrun import speedrun
from fmnist.bench.steps import CPU_STEP_VARIANTS, CUDA_STEP_VARIANTS, STEP_VARIANTS, steps
from fmnist.bench.throughput import (
    FmnistLoop,
    ReferenceLoop,
    reference_transform,
    throughput,
    torchvision_root,
    write_idx,
)
from fmnist.config import ConfigError

__all__ = [
    "AMP_BENCH_FILE", "AMP_MODES", "CPU_STEP_VARIANTS", "CUDA_STEP_VARIANTS", "DEFAULT_CONFIG", "DEFAULT_DATA",
    "DEFORM_MODELS", "FULL_CONFIG", "GPU_BENCH_FILE", "GPU_TABLE_FILE", "SPEEDRUN_CONFIG", "STEP_VARIANTS",
    "ConfigError", "Dmon", "FmnistLoop", "ReferenceLoop", "amp", "amp_config", "amp_pairs", "amp_table",
    "check_data", "concurrency", "dag", "deform", "fused_seeds", "gpu", "gpu_table", "makespan_check", "packed_speedup_measured",
    "parse_dmon", "parse_dmon_timed", "plan_vs_measured", "reference_transform",
    "require_cuda", "resolve_one", "side_by_side_during", "slot_intervals", "sm_over_window", "sm_summary", "speedrun", "startup_cost", "steps", "throughput",
    "torchvision_root", "write_gpu_result", "write_idx",
]
