"""What the commands share: the default config, loading a config, and printing a result."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from fmnist.config import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"


def load_config(configfile: str | None) -> dict:
    from fmnist import config

    return config.load(configfile or DEFAULT_CONFIG)


def quiet_if(as_json: bool) -> Callable[[str], None]:
    """The log of a benchmark or plan: silent when the command prints JSON, else print."""
    return (lambda _m: None) if as_json else print


def print_result(result: dict, as_json: bool, lines: list[str]) -> int:
    """The result as JSON, or the human lines."""
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print("\n".join(lines))
    return 0
