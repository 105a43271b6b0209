"""Code identity: a hash of the normalised source of every module that computes a result.

The workflow passes it to a rule as a param, and Snakemake reruns a job whose params changed. So
editing `models/vit.py` reruns the ViT runs and nothing else, while an edit that changes no code
(comments, docstrings, blank lines, formatting, the order of imports) leaves the hash and every
result alone.

Which modules: derived, not listed. A rule names the modules its script imports (its roots); the
identity covers those and every `fmnist.*` module they import, transitively, read from the source with
`ast` (imports inside functions included, and the parent packages an import executes). So a module a
run starts to use is part of its identity the moment it is imported; none can be forgotten. Nothing is
imported to find them (the workflow computes identities while it parses: no torch).

Two packages are boundaries, neither hashed nor followed (`BOUNDARY`):
- `fmnist` itself: its `__init__` holds the package's version only (tests/test_codeid.py keeps it so),
  and a version bump must not retrain a study;
- `fmnist.models`, the model registry: every family imports it (`build_model`, the weight tables),
  and it names every family, so following it would make an edit to one family rerun them all. What it
  contributes to a run is the preset: its arguments and training overrides are in the resolved run
  config (a param of its own), and its family module and class are hashed into the run's identity
  here (`train_code_id`). So adding or editing another preset reruns nothing, and changing the class a
  preset builds reruns its runs. Editing the registry's own functions reruns nothing: they look a
  preset up and call its class with the config's arguments.
It errs towards rerunning: a module is in when anything of it is imported, used or not (an edit to
`compare.py` reruns the figures, whose `plots` imports one function of it; an edit to `config.py`
reruns every run, since the trainer imports its config hash). So the trainer's modules import only what
computes a run: the numerics (`amp`), not the GPU placement (`gpus`); the prepared file (`data`), not its
download (`fetch`); the run folder's layout (`runfiles`), not the checks that read it back (`integrity`). Files a module reads are not code:
`schema.yaml`'s defaults reach a run through its resolved config, the report templates are inputs of
the report rule.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "fmnist"
PACKAGE_DIR = Path(__file__).resolve().parent
"""The package these identities describe: the one this module belongs to (a workflow copy's own src/)."""

BOUNDARY = frozenset({"fmnist", "fmnist.models"})
"""Packages neither hashed nor followed (see the module docstring)."""

# The roots of each rule: the fmnist modules its workflow script imports (tests/test_codeid.py checks
# every script against these). A training run adds its model family module (fmnist.models.<family>).
TRAIN_MODULES = ("fmnist.train", "fmnist.runline")
FEATURE_MODULES = ("fmnist.features",)
DATA_MODULES = ("fmnist.fetch",)
AGGREGATE_MODULES = ("fmnist.aggregate", "fmnist.compare", "fmnist.integrity")
# The templates are inputs of the report rule, so they are watched as files, not here.
REPORT_MODULES = ("fmnist.report", "fmnist.compare", "fmnist.integrity", "fmnist.smoke")
PLOT_MODULES = ("fmnist.plots", "fmnist.integrity")
GALLERY_MODULES = ("fmnist.gallery",)
# What the train and features scripts import to take their GPU slots before torch loads: where a job runs,
# not what it computes (a run's results do not depend on its slot), so in no job's identity.
PLACEMENT_MODULES = ("fmnist.gpus",)
# Pack mode (fmnist.packs): the train_pack job's launcher, and the train job that links its result
# (covered through its input, the pack's summary).
PACK_MODULES = ("fmnist.packs", "fmnist.gpus", "fmnist.runline", "fmnist.runcache")

_BODIES = ("body", "orelse", "finalbody")


def _is_string_statement(node: ast.AST) -> bool:
    """A bare string statement: a docstring, or an attribute docstring under a field. It does nothing."""
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _import_key(node: ast.Import | ast.ImportFrom) -> tuple:
    alias = node.names[0]
    if isinstance(node, ast.Import):
        return (1, 0, alias.name, "", alias.asname or "")
    first = 0 if node.module == "__future__" else 1  # where Python requires it, for a readable text
    return (first, node.level, node.module or "", alias.name, alias.asname or "")


def _sorted_imports(body: list[ast.stmt]) -> list[ast.stmt]:
    """`body` with each run of consecutive import statements in one order: every imported name its own
    statement (`import a, b` is `import a` and `import b`; `from m import x, y` is one per name), sorted.
    So sorting, grouping or splitting imports (an import sorter's edits) leaves the normalised source alone;
    a statement between imports stays where it is, and so do the imports on either side of it."""
    out: list[ast.stmt] = []
    run: list[ast.stmt] = []
    for stmt in [*body, None]:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            run += [ast.Import(names=[a]) if isinstance(stmt, ast.Import)
                    else ast.ImportFrom(module=stmt.module, names=[a], level=stmt.level) for a in stmt.names]
            continue
        out += sorted(run, key=_import_key)
        run = []
        if stmt is not None:
            out.append(stmt)
    return out


def _analyse_tree(tree: ast.AST) -> list[tuple[int, str, tuple[str, ...]]]:
    """Strip `tree` of its docstrings and put its imports in one order (in place, see _sorted_imports);
    return its import statements, wherever they are, as (level, module, names): `import a.b` is
    (0, "a.b", ()), `from ..a import b, c` is (2, "a", ("b", "c"))."""
    found = []
    for node in ast.walk(tree):  # one walk: a node's children are queued before it is yielded
        if isinstance(node, ast.Import):
            found += [(0, alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", tuple(alias.name for alias in node.names)))
        for attr in _BODIES:
            body = getattr(node, attr, None)
            if isinstance(body, list) and body and any(map(_is_string_statement, body)):
                kept = [stmt for stmt in body if not _is_string_statement(stmt)]
                # a body cannot be empty: `pass` is what a docstring-only function means
                body = kept or [ast.Pass()]
                setattr(node, attr, body)
            if isinstance(body, list) and any(isinstance(stmt, ast.Import | ast.ImportFrom) for stmt in body):
                setattr(node, attr, _sorted_imports(body))
    return found


def normalise(source: str, filename: str = "<source>") -> str:
    """The code of `source` without comments, docstrings, formatting or the order of its imports:
    ast.unparse of the stripped tree (see _analyse_tree).

    ast.unparse rather than ast.dump: its output stays the same across Python versions far more often.
    """
    tree = ast.parse(source, filename=filename)
    _analyse_tree(tree)
    return ast.unparse(tree)


def module_file(name: str, root: Path | None = None) -> Path:
    """The source file of module `name` (fmnist.*) in the package at `root` (this one by default)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        raise ModuleNotFoundError(f"{name!r} is not a module of {PACKAGE}")
    base = (root or PACKAGE_DIR).joinpath(*parts[1:])
    for path in (base.with_suffix(".py") if len(parts) > 1 else None, base / "__init__.py"):
        if path is not None and path.is_file():
            return path
    raise ModuleNotFoundError(f"no Python source found for module {name!r} under {root or PACKAGE_DIR}")


def _is_module(name: str, root: Path | None) -> bool:
    try:
        module_file(name, root)
        return True
    except ModuleNotFoundError:
        return False


def _with_parents(name: str) -> list[str]:
    """`name` and the packages that importing it executes first (fmnist.a.b: fmnist, fmnist.a, fmnist.a.b)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _resolve(statements, name: str, is_package: bool, root: Path | None) -> set[str]:
    """The fmnist modules that import statements (see _analyse_tree) of module `name` execute."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for level, module, names in statements:
        if level:  # relative: from .x import y
            anchor = package.split(".")[: len(package.split(".")) - level + 1]
            module = ".".join([*anchor, *([module] if module else [])])
        targets = [module] + [f"{module}.{n}" for n in names if _is_module(f"{module}.{n}", root)]
        for target in targets:
            if target.split(".")[0] == PACKAGE:
                found.update(m for m in _with_parents(target) if _is_module(m, root))
    return found


def source_imports(source: str, name: str, filename: str = "<source>",
                   root: Path | None = None) -> set[str]:
    """The fmnist modules that `source` (module `name`, or "" for a script) imports anywhere in its code,
    with the parent packages each import executes. `from P import x` counts P.x when x is a module."""
    statements = _analyse_tree(ast.parse(source, filename=filename))
    return _resolve(statements, name, filename.endswith("__init__.py"), root)


@cache
def _analyse(path: Path, mtime_ns: int, size: int) -> tuple[str, tuple]:
    """(SHA-256 of the normalised source, import statements) of one file, parsed once. Keyed on mtime
    and size as well, so a long-lived process sees an edited file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    statements = tuple(_analyse_tree(tree))
    return hashlib.sha256(ast.unparse(tree).encode()).hexdigest(), statements


def _analysed(name: str, root: Path | None) -> tuple[Path, tuple[str, tuple]]:
    path = module_file(name, root)
    st = path.stat()
    return path, _analyse(path, st.st_mtime_ns, st.st_size)


def imports(name: str, root: Path | None = None) -> frozenset[str]:
    """The fmnist modules module `name` imports (see source_imports)."""
    path, (_, statements) = _analysed(name, root)
    return frozenset(_resolve(statements, name, path.name == "__init__.py", root))


def closure(roots: Iterable[str], root: Path | None = None) -> tuple[str, ...]:
    """`roots` and every fmnist module they import, transitively, sorted; the BOUNDARY packages are
    neither in it nor followed."""
    seen: set[str] = set()
    todo = [m for m in roots if m not in BOUNDARY]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(m for m in imports(name, root) if m not in BOUNDARY and m not in seen)
    return tuple(sorted(seen))


def module_digest(name: str, root: Path | None = None) -> str:
    """SHA-256 of the normalised source of module `name`."""
    return _analysed(name, root)[1][0]


def code_id(roots: Iterable[str], extra: str = "", root: Path | None = None) -> str:
    """One short hash over the normalised source of `roots` and all they import (see `closure`); order
    and repeats do not matter. `extra`: what else decides the result (a preset's family and class)."""
    h = hashlib.sha256()
    for name in closure(roots, root):
        h.update(f"{name}\0{module_digest(name, root)}\n".encode())
    h.update(f"extra\0{extra}\n".encode())
    return h.hexdigest()[:16]


def train_modules(family: str, root: Path | None = None) -> tuple[str, ...]:
    """Every module that computes a training run of a model from family module `family` (e.g. 'vit')."""
    return closure((*TRAIN_MODULES, f"fmnist.models.{family}"), root)


def _preset(arch: str) -> tuple[str, str]:
    from fmnist import models  # the registry imports no torch

    preset = models.get_preset(arch)
    return preset.module, preset.cls


def user_model_files(arch: str) -> tuple[dict[str, Path], set[str]]:
    """The source of a user's own model class ("my_models:MyNet", fmnist.usermodel): module name ->
    file of its module and, transitively, of the modules it imports from beside it (found in its own
    directory or package, the working directory or $FMNIST_MODEL_PATH, never an installed package), and
    the fmnist modules they import. Nothing is imported to find them."""
    from fmnist import usermodel

    loc = usermodel.locate(arch)
    files: dict[str, Path] = {}
    fmnist_modules: set[str] = set()
    local = [str(d) for d in usermodel.local_dirs(loc)]
    todo = [(loc.module, loc.path)]
    while todo:
        name, path = todo.pop()
        if name in files:
            continue
        files[name] = path
        st = path.stat()
        _, statements = _analyse(path, st.st_mtime_ns, st.st_size)
        is_package = path.name == "__init__.py"
        fmnist_modules |= _resolve(statements, name, is_package, None)
        if not loc.local:
            continue
        package = name if is_package else name.rpartition(".")[0]
        for level, module, names in statements:
            if level:
                if not package:
                    continue  # a relative import outside a package fails when run
                anchor = package.split(".")[: len(package.split(".")) - level + 1]
                module = ".".join([*anchor, *([module] if module else [])])
            if not module or module.split(".")[0] == PACKAGE:
                continue
            for target in (module, *(f"{module}.{n}" for n in names)):
                for part in _with_parents(target):
                    spec = usermodel._find_spec(part, local)
                    origin = Path(spec.origin) if spec is not None and spec.origin else None
                    if origin is not None and origin.suffix == ".py" and origin.is_file():
                        todo.append((part, origin))
    return files, fmnist_modules


def _arch_code(arch: str, roots: tuple[str, ...], root: Path | None) -> str:
    """The code identity of a model `arch` computed by the modules `roots`: the preset's family module
    and class, or a user's own model's files and the fmnist modules they import."""
    from fmnist import usermodel

    if usermodel.is_user_arch(arch):
        files, fmnist_modules = user_model_files(arch)
        digests = []
        for name, path in sorted(files.items()):
            st = path.stat()
            digests.append(f"{name}={_analyse(path, st.st_mtime_ns, st.st_size)[0]}")
        extra = f"user:{usermodel.split_arch(arch)[1]}:" + ",".join(digests)
        return code_id((*roots, "fmnist.usermodel", *sorted(fmnist_modules)), extra, root)
    family, cls = _preset(arch)
    return code_id((*roots, f"fmnist.models.{family}"), f"{family}.{cls}", root)


def train_code_id(run: dict, root: Path | None = None) -> str:
    """The code identity of one resolved run (as made by fmnist.experiments.expand)."""
    return _arch_code(run["model"]["arch"], TRAIN_MODULES, root)


def train_code_ids(runs: dict[str, dict], root: Path | None = None) -> dict[str, str]:
    """Run id -> code identity for many runs, each model class hashed once (a study has hundreds of
    runs but a handful of classes)."""
    archs = {rid: run["model"]["arch"] for rid, run in runs.items()}
    ids = {arch: _arch_code(arch, TRAIN_MODULES, root) for arch in set(archs.values())}
    return {rid: ids[arch] for rid, arch in archs.items()}


def features_code_id(spec: dict, root: Path | None = None) -> str:
    """The code identity of a feature set (fmnist.features.feature_spec): the feature code and the
    backbone's family module."""
    return _arch_code(spec["arch"], FEATURE_MODULES, root)
