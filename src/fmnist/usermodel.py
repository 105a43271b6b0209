"""Models from your own code: a preset whose `arch` names a class in a module of yours.

    models:
      my_net: {arch: "my_models:MyNet", args: {width: 32}}

`arch` is "MODULE:CLASS". MODULE is either
- a dotted module name (`my_models`, `lab.nets`), found in the working directory (where you run
  snakemake or fmnist), then in the directories of $FMNIST_MODEL_PATH (separated like PATH), then among
  installed packages; or
- a path to a Python file, ending in .py (`models/my_net.py`), relative to the working directory or
  absolute.

CLASS is a `torch.nn.Module` subclass (or any callable returning one) defined in that module. It is
built as `CLASS(**args)`, with `num_classes=10` added when its constructor takes `num_classes` (or
`**kwargs`), and must map the trainer's normalised input, a float tensor (N, 1, 28, 28), to logits
(N, num_classes).

Checked while the workflow parses its config, without importing torch or running your code: that the
module is found, that it defines CLASS, and, when CLASS defines `__init__` itself, that `args` names
only its parameters and every parameter without a default. Checked when the model is built (the first
training job, before its first epoch): that the module imports, that CLASS(...) is an nn.Module and
that its output has the right shape.

Your module's code is part of each of its runs' identity (fmnist.codeid.train_code_id): the module's
file, the modules it imports from beside it (found in the same directory, or the same package) and the
fmnist modules it imports. Editing any of them retrains the runs that use it, and only those; a
change to comments, docstrings or formatting retrains nothing.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmnist.config import ConfigError

ENV_PATH = "FMNIST_MODEL_PATH"
HOW = ('name a class in your own module as arch: "my_models:MyNet" (my_models.py in the working '
       'directory) or arch: "path/to/file.py:MyNet" (docs/models.md, "Your own model")')


class UserModelError(ConfigError):
    """A user model that cannot be found, read or built; the message names the problem and the fix."""


def is_user_arch(arch: str) -> bool:
    """Whether `arch` names a class in the user's own module ("MODULE:CLASS") rather than a preset."""
    return isinstance(arch, str) and ":" in arch


@dataclass(frozen=True)
class Located:
    arch: str
    module: str
    """The module's import name: the dotted name as written, or the file's stem for a path."""
    cls: str
    path: Path
    """The module's source file, absolute."""
    root: Path
    """The directory the module's top-level name was found in (the file's directory for a path)."""
    local: bool
    """Whether it was found in the working directory or $FMNIST_MODEL_PATH (not an installed package):
    only then are the modules it imports from its root followed into its identity."""


def split_arch(arch: str) -> tuple[str, str]:
    target, _, cls = arch.rpartition(":")
    if not target or not cls.isidentifier():
        raise UserModelError(
            f"model arch {arch!r}: expected MODULE:CLASS with CLASS a Python class name; {HOW}"
        )
    return target, cls


def is_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def search_dirs() -> list[Path]:
    """Where a dotted module name is looked for, first to last (installed packages: sys.path)."""
    extra = [p for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p]
    return [Path.cwd(), *(Path(p).expanduser().resolve() for p in extra)]


def _find_spec(name: str, dirs: list[str]):
    """The spec of module `name` found in `dirs` without executing anything (parents included)."""
    parts = name.split(".")
    spec = None
    for i in range(len(parts)):
        spec = importlib.machinery.PathFinder.find_spec(".".join(parts[: i + 1]), dirs)
        if spec is None:
            return None
        if i < len(parts) - 1:
            dirs = list(spec.submodule_search_locations or [])
            if not dirs:
                return None
    return spec


def locate(arch: str) -> Located:
    """Find the module file of `arch` without importing it; UserModelError when it is not there."""
    target, cls = split_arch(arch)
    if is_path(target):
        path = Path(target).expanduser()
        path = (path if path.is_absolute() else Path.cwd() / path).resolve()
        if path.suffix != ".py" or not path.is_file():
            raise UserModelError(
                f"model arch {arch!r}: no Python file {str(path)!r} (a relative path is read from the "
                f"working directory, {str(Path.cwd())!r}). Create it, or fix the path; {HOW}"
            )
        return Located(arch, path.stem, cls, path, path.parent, True)
    if not all(part.isidentifier() for part in target.split(".")):
        raise UserModelError(f"model arch {arch!r}: {target!r} is not a module name; {HOW}")
    own = search_dirs()
    for dirs, local in ((own, True), ([Path(p) for p in sys.path if p], False)):
        for d in dirs:
            spec = _find_spec(target, [str(d)])
            if spec is not None:
                origin = Path(spec.origin or "")
                if origin.suffix != ".py" or not origin.is_file():
                    raise UserModelError(
                        f"model arch {arch!r}: module {target!r} at {str(origin)!r} is not Python source; "
                        f"name a .py module. {HOW}"
                    )
                return Located(arch, target, cls, origin.resolve(), d.resolve(), local)
    where = ", ".join(repr(str(d)) for d in own)
    raise UserModelError(
        f"model arch {arch!r}: no module {target!r} found in {where} (the working directory, then "
        f"${ENV_PATH}) nor among installed packages. Put {target.replace('.', '/')}.py in the working "
        f"directory, add its directory to ${ENV_PATH}, or name the file: "
        f"arch: \"path/to/{target.rsplit('.', 1)[-1]}.py:{cls}\""
    )


def local_dirs(loc: Located) -> list[Path]:
    """Where the modules a user's module imports are looked for first, in order: its own root, the
    working directory, $FMNIST_MODEL_PATH. What is found there is part of its runs' identity."""
    return list(dict.fromkeys([loc.root, *search_dirs()]))


def _tree(path: Path, arch: str) -> ast.Module:
    try:
        return ast.parse(path.read_text(), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as exc:
        raise UserModelError(f"model arch {arch!r}: {str(path)!r} is not valid Python: {exc}") from None


def _bound_names(tree: ast.Module) -> dict[str, ast.AST]:
    """Top-level names of a module and the statement that binds each (the last one wins)."""
    names: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names[node.name] = node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for n in ast.walk(target):
                    if isinstance(n, ast.Name):
                        names[n.id] = node
    return names


@dataclass(frozen=True)
class Signature:
    params: tuple[str, ...]
    required: tuple[str, ...]
    var_keyword: bool


def _init_signature(node: ast.AST) -> Signature | None:
    """The constructor parameters of a class defined with its own __init__ (None when not known here:
    an inherited __init__, a factory function's is read from the function itself)."""
    fn = None
    if isinstance(node, ast.ClassDef):
        fn = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        skip = 1
    elif isinstance(node, ast.FunctionDef):
        fn, skip = node, 0
    if fn is None:
        return None
    a = fn.args
    positional = [*a.posonlyargs, *a.args][skip:]
    n_required = len(positional) - len(a.defaults)
    required = [p.arg for p in positional[:n_required]]
    required += [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is None]
    params = [p.arg for p in positional] + [p.arg for p in a.kwonlyargs]
    return Signature(tuple(params), tuple(required), a.kwarg is not None)


def from_launch_directory(config: dict) -> None:
    """Smoke mode (fmnist.smoke) runs its jobs in a working directory of its own: call this before it
    changes directory, and the config's own models are found from the launch directory (a relative
    file path becomes absolute, and the launch directory joins $FMNIST_MODEL_PATH, which the jobs inherit)."""
    own = [m for m in (config.get("models") or {}).values() if is_user_arch(m.get("arch", ""))]
    for model in own:
        target, cls = split_arch(model["arch"])
        if is_path(target) and not os.path.isabs(target):
            model["arch"] = f"{os.path.abspath(target)}:{cls}"
    if own:
        path = os.environ.get(ENV_PATH)
        os.environ[ENV_PATH] = os.pathsep.join([os.getcwd(), *([path] if path else [])])


def check_args(arch: str, args: dict[str, Any]) -> Located:
    """Check, without importing anything, that `arch`'s module is there, defines its class and that
    `args` fit the class's constructor; UserModelError (a ValueError) naming the problem otherwise."""
    loc = locate(arch)
    names = _bound_names(_tree(loc.path, arch))
    if loc.cls not in names:
        classes = sorted(n for n, node in names.items() if isinstance(node, ast.ClassDef))
        raise UserModelError(
            f"model arch {arch!r}: {str(loc.path)!r} defines no {loc.cls!r} at its top level; its "
            f"classes: {', '.join(classes) or '(none)'}. Fix the name after the colon."
        )
    if "num_classes" in args:
        raise UserModelError(
            f"model arch {arch!r}: args sets num_classes, which fmnist passes itself (10 for Fashion-MNIST) "
            "when the constructor takes it; remove it from args"
        )
    sig = _init_signature(names[loc.cls])
    if sig is None:
        return loc
    unknown = [] if sig.var_keyword else sorted(set(args) - set(sig.params))
    missing = [p for p in sig.required if p not in args and p != "num_classes"]
    if unknown or missing:
        problems = []
        if unknown:
            problems.append(f"takes no argument {', '.join(map(repr, unknown))}")
        if missing:
            problems.append(f"needs the argument(s) {', '.join(map(repr, missing))} in args")
        allowed = ", ".join(p for p in sig.params if p != "num_classes") or "(none)"
        raise UserModelError(f"model arch {arch!r}: {loc.cls} {' and '.join(problems)}; its arguments: {allowed}")
    return loc


def load_class(arch: str):
    """Import the module of `arch` (its root first on sys.path) and return its class."""
    loc = locate(arch)
    for d in reversed(local_dirs(loc)):  # its imports find what its code identity covers
        if str(d) not in sys.path:
            sys.path.insert(0, str(d))
    try:
        if is_path(split_arch(arch)[0]):
            name = f"fmnist_user_{loc.module}_{hashlib.sha1(str(loc.path).encode()).hexdigest()[:10]}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, loc.path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[name]
                    raise
        else:
            module = importlib.import_module(loc.module)
    except UserModelError:
        raise
    except Exception as exc:
        raise UserModelError(
            f"model arch {arch!r}: importing {str(loc.path)!r} failed: {type(exc).__name__}: {exc}. "
            "Fix the module (try `python -c 'import ...'` in the working directory)."
        ) from exc
    try:
        return getattr(module, loc.cls)
    except AttributeError:
        raise UserModelError(
            f"model arch {arch!r}: module {str(loc.path)!r} has no attribute {loc.cls!r} once imported; "
            "fix the name after the colon"
        ) from None


def _takes_num_classes(factory) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "num_classes" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build(arch: str, args: dict[str, Any] | None = None, num_classes: int = 10, check_output: bool = True):
    """Instantiate `arch` with `args` (and num_classes, when its constructor takes it), checking that it
    is an nn.Module mapping (N, 1, 28, 28) to (N, num_classes)."""
    import torch

    args = dict(args or {})
    check_args(arch, args)
    factory = load_class(arch)
    if not callable(factory):
        raise UserModelError(f"model arch {arch!r}: {split_arch(arch)[1]} is not a class; name an nn.Module subclass")
    kwargs = {**args, "num_classes": num_classes} if _takes_num_classes(factory) else args
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise UserModelError(f"model arch {arch!r}: {split_arch(arch)[1]}(**{kwargs!r}) failed: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise UserModelError(
            f"model arch {arch!r}: {split_arch(arch)[1]}(...) gave a {type(model).__name__}, not a "
            "torch.nn.Module; subclass torch.nn.Module"
        )
    if check_output:
        check_output_shape(arch, model, num_classes)
    return model


def check_output_shape(arch: str, model, num_classes: int = 10) -> None:
    """Run `model` once on two zero images in eval mode (RNG state and training mode restored): its
    output must be logits (2, num_classes)."""
    import torch

    was_training = model.training
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.zeros(2, 1, 28, 28, device=device)
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            out = model(x)
    except Exception as exc:
        raise UserModelError(
            f"model arch {arch!r}: its forward pass failed on a (2, 1, 28, 28) input, the shape the trainer "
            f"feeds (normalised 28x28 greyscale): {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, num_classes):
        raise UserModelError(
            f"model arch {arch!r}: on a (2, 1, 28, 28) input it returns {shape}, not logits of shape "
            f"(2, {num_classes}); end the model with a layer of {num_classes} outputs (no softmax)"
        )
