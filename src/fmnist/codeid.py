"""Code identity: a hash of the normalised source of exactly the modules that compute a result.

The workflow passes it to a rule as a param, and Snakemake reruns a job whose params changed. So
editing `models/vit.py` reruns the ViT runs and nothing else, while an edit that changes no code
(comments, docstrings, blank lines, formatting) leaves the hash and every result alone.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
from collections.abc import Iterable
from functools import cache
from pathlib import Path

# What computes a training run, besides its model family file (fmnist.models.<family>). The model
# registry (fmnist.models) is left out: a preset's arguments are part of the resolved run config,
# which is a param of its own, so adding a preset reruns nothing.
TRAIN_MODULES = (
    "fmnist.train",
    "fmnist.runtime",
    "fmnist.recipes",
    "fmnist.augment",
    "fmnist.augment.batched",
    "fmnist.data",
    "fmnist.metrics",
)
AGGREGATE_MODULES = ("fmnist.aggregate", "fmnist.compare")
# The templates are inputs of the report rule, so they are watched as files, not here.
REPORT_MODULES = ("fmnist.report", "fmnist.compare")
PLOT_MODULES = ("fmnist.plots",)
GALLERY_MODULES = ("fmnist.gallery", "fmnist.augment", "fmnist.augment.batched", "fmnist.data")

_BODIES = ("body", "orelse", "finalbody")


def _is_string_statement(node: ast.AST) -> bool:
    """A bare string statement: a docstring, or an attribute docstring under a field. It does nothing."""
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def normalise(source: str, filename: str = "<source>") -> str:
    """The code of `source` without comments, docstrings or formatting: ast.unparse of the stripped tree.

    ast.unparse rather than ast.dump: its output stays the same across Python versions far more often.
    """
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        for attr in _BODIES:
            body = getattr(node, attr, None)
            if isinstance(body, list) and body and any(map(_is_string_statement, body)):
                kept = [stmt for stmt in body if not _is_string_statement(stmt)]
                # a body cannot be empty: `pass` is what a docstring-only function means
                setattr(node, attr, kept or [ast.Pass()])
    return ast.unparse(tree)


def module_file(name: str) -> Path:
    """The source file of module `name`, found the way `import` would find it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ModuleNotFoundError(f"no Python source found for module {name!r}")
    return Path(spec.origin)


@cache
def _file_digest(path: Path, mtime_ns: int, size: int) -> str:
    # keyed on mtime and size as well, so a long-lived process sees an edited file
    return hashlib.sha256(normalise(path.read_text(), str(path)).encode()).hexdigest()


def module_digest(name: str) -> str:
    path = module_file(name)
    st = path.stat()
    return _file_digest(path, st.st_mtime_ns, st.st_size)


def code_id(modules: Iterable[str]) -> str:
    """One short hash over the normalised source of `modules` (order and repeats do not matter)."""
    h = hashlib.sha256()
    for name in sorted(set(modules)):
        h.update(f"{name}\0{module_digest(name)}\n".encode())
    return h.hexdigest()[:16]


def train_modules(family: str) -> tuple[str, ...]:
    """The modules that compute a training run of a model from family module `family` (e.g. 'vit')."""
    return (*TRAIN_MODULES, f"fmnist.models.{family}")


def train_code_id(run: dict) -> str:
    """The code identity of one resolved run (as made by fmnist.experiments.expand)."""
    from fmnist import models

    return code_id(train_modules(models.PRESETS[run["model"]["arch"]].module))


def train_code_ids(runs: dict[str, dict]) -> dict[str, str]:
    """Run id -> code identity for many runs, each model family hashed once (a study has hundreds
    of runs but a handful of families)."""
    from fmnist import models

    family = {rid: models.PRESETS[run["model"]["arch"]].module for rid, run in runs.items()}
    ids = {f: code_id(train_modules(f)) for f in set(family.values())}
    return {rid: ids[f] for rid, f in family.items()}
