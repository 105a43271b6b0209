"""Shared start of every workflow script: import path and log redirection (no Snakemake imports)."""

import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


def redirect_output(log_path: str):
    """Send this job's stdout and stderr (prints, warnings, tracebacks) to its log file."""
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    fh = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
    sys.stdout = sys.stderr = fh
    return fh
