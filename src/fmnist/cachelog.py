"""Snakemake's per-file run-cache messages, kept off its log while the workflow runs.

The between-workflow cache logs a "Moving output file ..." and a "Symlinking output file ..." line per
output file: 8 lines per training job. The workflow drops them while it is parsed (common.smk), unless
FMNIST_CACHE_MESSAGES is set. Standard library only: parsing the workflow stays light.
"""

from __future__ import annotations

import logging

CACHE_MESSAGES = ("Moving output file ", "Symlinking output file ")
"""What Snakemake's between-workflow cache logs per output file (8 lines per training job)."""


class _CacheChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(CACHE_MESSAGES)


def quiet_cache_messages() -> None:
    """Drop Snakemake's per-file run-cache messages from its log (terminal and log file); called from
    the workflow while it is parsed. Errors of the cache are logged otherwise and still show."""
    log = logging.getLogger("snakemake.logging")
    if not any(isinstance(f, _CacheChatter) for f in log.filters):
        log.addFilter(_CacheChatter())
