# The run cache without surprises (fmnist.runcache; docs/reliability.md): forced runs retrain and
# replace their cache entries, and results link to their entries by relative paths.

# `--forceall`, `--forcerun train` and `--forcerun`/`--force` naming a run's file make those runs
# train (the cache would otherwise restore them), and their new results replace the entries.
fmnist_runcache.retrain_when_forced(rules.train.rule, RUN_DIR)


def relink_run_outputs():
    """Results link to their cache entries relatively, so moving or copying the project keeps them."""
    if REAL_RUN:
        fmnist_runcache.relink(
            (RUN_DIR.format(run=r) for r in RUNS), fmnist_runfiles.RUN_OUTPUTS, RUN_CACHE
        )


onsuccess:
    relink_run_outputs()


onerror:
    relink_run_outputs()
