"""The shape of the house: no function in src/ longer than a reader takes in at once."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 80
"""Lines of a function from its `def` to its last line, docstring and comments included."""

# Functions over MAX_LINES that are still to be split, with their length when they were listed.
# The list only shrinks: a listed function that grows fails, and one split to MAX_LINES or fewer
# fails until it is taken off the list.
ALLOWED: dict[str, int] = {}


def function_lengths(root: Path = SRC) -> dict[str, int]:
    """`path::qualified.name` -> lines, for every function and method under `root` (nested ones too)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        stack: list[tuple[ast.AST, str]] = [(ast.parse(path.read_text(), filename=str(path)), "")]
        while stack:
            node, prefix = stack.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    name = prefix + child.name
                    if not isinstance(child, ast.ClassDef):
                        out[f"{rel}::{name}"] = child.end_lineno - child.lineno + 1
                    stack.append((child, name + "."))
                else:
                    stack.append((child, prefix))
    return out


def test_no_function_is_over_80_lines():
    lengths = function_lengths()
    assert len(lengths) > 300  # the walk found the package's functions
    too_long = {k: n for k, n in lengths.items() if n > MAX_LINES and k not in ALLOWED}
    assert not too_long, (
        f"functions over {MAX_LINES} lines: {too_long}; split each into steps a reader can name "
        "(see how train.train_run calls setup_run, train_epoch and finish_run)")
    grown = {k: (lengths.get(k), n) for k, n in ALLOWED.items() if lengths.get(k, 0) > n}
    assert not grown, f"allowed long functions grew (now, listed): {grown}; split them instead"
    done = [k for k, n in ALLOWED.items() if lengths.get(k, 0) <= MAX_LINES]
    assert not done, f"{done}: now {MAX_LINES} lines or fewer (or gone): take them off ALLOWED in tests/test_house.py"


def test_the_walk_counts_nested_functions_and_methods(tmp_path):
    (tmp_path / "pkg").mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(3))
    (tmp_path / "pkg" / "m.py").write_text(
        f"class C:\n    def method(self):\n{body.replace('    ', '        ')}\n\n"
        f"def outer():\n    def inner():\n        pass\n{body}\n")
    assert function_lengths(tmp_path) == {"pkg/m.py::C.method": 4, "pkg/m.py::outer": 6,
                                          "pkg/m.py::outer.inner": 2}
