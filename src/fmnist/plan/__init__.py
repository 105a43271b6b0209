"""Cost plan: images each run trains, measured images/s of its model on this device, estimated hours;
the runtime/mem_mb a training job asks a scheduler for, from the same figures; and the wall-clock hours
of a study on a machine.

| module | concern |
| --- | --- |
| `labels` | device labels: this machine's compute, or the GPU model `plan_device` names |
| `cache` | the throughput cache: its file, its keys, and the measurement that fills it |
| `cost` | images and hours per run, study and total (`plan`) |
| `jobs` | Snakemake job sizes: runtime, mem_mb, planned GPU memory; the message for missing figures |
| `makespan` | wall-clock hours: jobs packed on G GPUs or C cores (`wall_clock`) |

The workflow imports this package while it parses: no module here imports torch at the top.
"""

from fmnist.plan.cache import (
    cache_path,
    fast_mode,
    fast_paths_enabled,
    feature_figure_key,
    find_figure,
    load_cache,
    measure,
    save_cache,
    throughput_key,
)
from fmnist.plan.cost import (
    EVAL_SPEEDUP,
    FULL_TEST_IMAGES,
    FULL_TRAIN_IMAGES,
    plan,
    run_cost,
    split_sizes,
)
from fmnist.plan.jobs import (
    BASE_MEM_MB,
    DEFAULT_MEM_MB,
    DEFAULT_RUNTIME_MINUTES,
    FEATURE_BATCH,
    GPU_DATA_MB,
    GPU_JOB_DEFAULT_MB,
    OVERHEAD_MINUTES,
    SAFETY,
    feature_resources,
    gpu_mem_mb,
    gpu_need_mb,
    missing_figures_message,
    resources,
    unmeasured_models,
)
from fmnist.plan.labels import (
    GPU_WORDS_DROPPED,
    device_label,
    gpu_label,
    gpu_slug,
    label_matches,
    local_gpu_model,
    measure_command,
    measuring_label,
    plan_label,
)
from fmnist.plan.makespan import PACKED_SPEEDUP, config_copy, makespan, packed_speedup, wall_clock

__all__ = [
    "BASE_MEM_MB", "DEFAULT_MEM_MB", "DEFAULT_RUNTIME_MINUTES", "EVAL_SPEEDUP", "FEATURE_BATCH", "FULL_TEST_IMAGES",
    "FULL_TRAIN_IMAGES", "GPU_DATA_MB", "GPU_JOB_DEFAULT_MB", "GPU_WORDS_DROPPED", "OVERHEAD_MINUTES",
    "PACKED_SPEEDUP", "SAFETY", "cache_path", "config_copy", "device_label", "fast_mode",
    "fast_paths_enabled", "feature_figure_key", "feature_resources", "find_figure", "gpu_label", "gpu_mem_mb", "gpu_need_mb",
    "gpu_slug", "label_matches", "load_cache", "local_gpu_model", "makespan", "measure", "measure_command",
    "measuring_label", "missing_figures_message", "packed_speedup", "plan", "plan_label", "resources",
    "run_cost", "save_cache", "split_sizes", "throughput_key", "unmeasured_models", "wall_clock",
]
