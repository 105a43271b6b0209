"""A file the workflow reads back is damaged: the one error that says so, naming the file, what is wrong
and the fix (the workflow scripts print its message alone, without a traceback)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

COMMAND_ENV = "FMNIST_SNAKEMAKE"
"""The command a fix line names; common.smk sets it to the invocation in effect (its --configfile)."""


class DamagedFileError(RuntimeError):
    """A file the workflow reads back is unusable; the message names it, the problem and the fix."""

    def __init__(self, problems: list[tuple[Path, str]], fix: str):
        self.problems, self.fix = problems, fix
        lines = [f"{path}: {problem}" for path, problem in problems]
        super().__init__("\n".join(lines) + f"\nFix: {fix}")


def snakemake_command() -> str:
    return os.environ.get(COMMAND_ENV) or "snakemake"


def remove_fix(path: Path | str, then: str) -> str:
    """The fix for a damaged file the workflow makes: remove it and run the workflow again, which makes
    it again; `then` says what that run does ("prepares it again")."""
    return f"rm -f {shlex.quote(str(path))} && {snakemake_command()} (the next run of the workflow {then})"


def damaged(path: Path, problem: str, then: str) -> DamagedFileError:
    """The error for one damaged file the workflow makes again once it is removed (see remove_fix)."""
    return DamagedFileError([(path, problem)], remove_fix(path, then))
