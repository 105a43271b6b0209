"""Project rules that ruff cannot express, checked by `make lint` (python -m fmnist.lint src workflow Snakefile).

Rule: nothing the project loads may be unpickled as code. Every `torch.load` says `weights_only=True`
(tensors, numbers, strings, lists and dicts only): results, caches and resume states live in
directories others may write to, and a planted pickle would run its code on load. The feature cache
once came back with `weights_only=False`; this check keeps it out. PyTorch's own default (True since
2.6) is not relied on: the call says so itself, so an older PyTorch is as safe.

Python files are checked on their syntax tree (a `weights_only` that is not the constant True, a
`torch.load` without it); other workflow files (Snakefile, *.smk) by text.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path

_TEXT_RULE = re.compile(r"weights_only\s*=\s*(?!True\b)")


def _is_torch_load(call: ast.Call) -> bool:
    f = call.func
    return isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name) and f.value.id == "torch"


def python_findings(source: str, filename: str) -> list[str]:
    """`file:line: problem` for each unsafe load in one Python source."""
    out = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if not isinstance(node, ast.Call):
            continue
        kw = next((k for k in node.keywords if k.arg == "weights_only"), None)
        if kw is not None and not (isinstance(kw.value, ast.Constant) and kw.value.value is True):
            out.append(f"{filename}:{node.lineno}: weights_only={ast.unparse(kw.value)}; it must be "
                       "weights_only=True (never unpickle code from a file)")
        elif kw is None and _is_torch_load(node) and not any(k.arg is None for k in node.keywords):
            out.append(f"{filename}:{node.lineno}: torch.load without weights_only=True; say "
                       "weights_only=True (never unpickle code from a file)")
    return out


def text_findings(text: str, filename: str) -> list[str]:
    return [f"{filename}:{i}: {line.strip()}; it must be weights_only=True (never unpickle code from a file)"
            for i, line in enumerate(text.splitlines(), 1) if _TEXT_RULE.search(line)]


def files(roots: Iterable[Path | str]) -> list[Path]:
    out = []
    for root in map(Path, roots):
        candidates = [root] if root.is_file() else sorted(root.rglob("*"))
        out += [p for p in candidates if p.is_file() and "__pycache__" not in p.parts
                and (p.suffix in (".py", ".smk") or p.name == "Snakefile")]
    return out


def findings(roots: Iterable[Path | str]) -> list[str]:
    """Every unsafe load under `roots` (files or directories)."""
    out = []
    for path in files(roots):
        text = path.read_text()
        out += python_findings(text, str(path)) if path.suffix == ".py" else text_findings(text, str(path))
    return out


def main(argv: list[str] | None = None) -> int:
    roots = (argv if argv is not None else sys.argv[1:]) or ["src", "workflow", "Snakefile"]
    found = findings(roots)
    for line in found:
        print(line, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
