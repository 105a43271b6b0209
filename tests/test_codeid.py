"""Code identity: comments, docstrings and formatting do not change it; code does; each rule sees its modules.

The modules an identity covers are derived from the imports (fmnist.codeid). The tests here check that
derivation against two others: the bytecode of the same files (dis, a different reader than ast) and
the modules a real Python process has loaded after importing the trainer and each family.
"""

import dis
import itertools
import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, make_workflow, planned_jobs, snakemake, tiny_config

from fmnist import codeid, models

SOURCE = textwrap.dedent('''
    """Module docstring."""

    import math  # a comment


    class Block:
        """Class docstring."""

        width: int = 3
        """Attribute docstring."""

        def forward(self, x):
            """Method docstring."""
            return math.sqrt(x) * self.width


    def only_doc():
        """Nothing but a docstring."""
''')


def test_comments_docstrings_and_formatting_are_ignored():
    edited = textwrap.dedent('''
        """A rewritten module docstring."""
        import math


        class Block:  # the comment moved here
            width: int = (
                3
            )

            def forward(self, x):
                # a new explanation, and no docstring any more
                return math.sqrt(x)   *   self.width


        def only_doc():
            """Another docstring."""
    ''')
    assert codeid.normalise(edited) == codeid.normalise(SOURCE)


def test_a_code_change_is_seen():
    base = codeid.normalise(SOURCE)
    assert codeid.normalise(SOURCE.replace("self.width", "self.width + 1")) != base
    assert codeid.normalise(SOURCE.replace("width: int = 3", "width: int = 4")) != base
    # a string that is a value, not a docstring, is code
    assert codeid.normalise(SOURCE + "\nNAME = 'a'\n") != codeid.normalise(
        SOURCE + "\nNAME = 'b'\n"
    )


IMPORTS_SORTED = textwrap.dedent('''
    from __future__ import annotations

    import math
    import os, sys
    from pathlib import Path, PurePath

    from fmnist import config, data

    LIMIT = 3


    def load(x):
        from fmnist import runtime, train
        return math.sqrt(x) + LIMIT
''')


def test_the_order_of_imports_is_not_code():
    """Sorting, grouping or splitting imports (what an import sorter does) is no edit; what is imported,
    under which name, and where a statement falls among them, is."""
    shuffled = textwrap.dedent('''
        from __future__ import annotations
        from fmnist import data
        import sys
        from pathlib import PurePath
        import os
        from fmnist import config
        from pathlib import Path
        import math
        LIMIT = 3
        def load(x):
            from fmnist import train
            from fmnist import runtime
            return math.sqrt(x) + LIMIT
    ''')
    base = codeid.normalise(IMPORTS_SORTED)
    assert codeid.normalise(shuffled) == base
    for old, new in [("import math", "import cmath as math"),          # another module under the name
                     ("config, data", "config"),                        # one name fewer
                     ("math.sqrt(x) + LIMIT", "math.sqrt(x + 1) + LIMIT"),  # a function body edit
                     ("    from fmnist import runtime, train\n", ""),  # a function's import dropped
                     ("import math\n", ""),                            # an import moved past a statement
                     ]:
        edited = IMPORTS_SORTED.replace(old, new, 1)
        if new == "":
            edited = edited.replace("LIMIT = 3\n", "LIMIT = 3\nimport math\n") if old == "import math\n" else edited
        assert codeid.normalise(edited) != base, (old, new)


def test_a_modules_identity_ignores_its_import_order_but_not_its_code(tmp_path):
    """On a copy of the package: the trainer with its imports reordered is the same run; a one-token edit
    inside one of its functions is another."""
    root = copy_package(tmp_path)
    cnn = {"model": {"arch": "standard_cnn"}}
    base = codeid.train_code_id(cnn, root)
    path = root / "train.py"
    source = path.read_text()
    lines = source.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("import "))
    plain = list(itertools.takewhile(lambda i: lines[i].startswith("import "), range(first, len(lines))))
    assert len(plain) > 3, "the trainer's standard library imports moved"
    block = [lines[i] for i in plain]
    lines[plain[0]:plain[-1] + 1] = block[::-1]  # reversed
    reordered = "".join(lines)
    names = re.search(r"^from fmnist import ([a-z_, ]+)$", reordered, re.M)
    reordered = reordered.replace(names.group(0), "from fmnist import " + ", ".join(names.group(1).split(", ")[::-1]))
    assert reordered != source
    path.write_text(reordered)
    assert codeid.train_code_id(cnn, root) == base
    body = "return total, trainable"
    assert reordered.count(body) == 1
    path.write_text(reordered.replace(body, "return trainable, total"))
    assert codeid.train_code_id(cnn, root) != base, "an edit inside a function body is not seen"


FAMILIES = sorted({p.module for p in models.PRESETS.values()})
SRC = REPO / "src" / "fmnist"
# The documented boundaries (fmnist.codeid's docstring), spelled out here rather than read from codeid.
BOUNDARY = {"fmnist", "fmnist.models"}


def file_of(name: str, root: Path = SRC) -> Path | None:
    base = root.joinpath(*name.split(".")[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if name != "fmnist" and path.is_file():
            return path
    return root / "__init__.py" if name == "fmnist" else None


def bytecode_imports(path: Path, root: Path = SRC) -> set[str]:
    """fmnist modules imported by the compiled code of `path`, nested functions included (dis, not ast)."""
    found, stack = set(), [compile(path.read_text(), str(path), "exec")]
    while stack:
        code = stack.pop()
        stack += [c for c in code.co_consts if hasattr(c, "co_code")]
        base = None
        for ins in dis.get_instructions(code):
            if ins.opname == "IMPORT_NAME":
                base = ins.argval
                names = [base]
            elif ins.opname == "IMPORT_FROM" and base is not None:
                names = [f"{base}.{ins.argval}"] if file_of(f"{base}.{ins.argval}", root) else []
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "fmnist":
                    found |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in found if file_of(m, root)}


def bytecode_closure(roots, root: Path = SRC) -> set[str]:
    seen, todo = set(), [m for m in roots if m not in BOUNDARY]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += [m for m in bytecode_imports(file_of(name, root), root) if m not in BOUNDARY]
    return seen


def trainer_and(family: str) -> tuple[str, ...]:
    """The train job's roots (the modules its script imports: the trainer and the result line) and a family."""
    return ("fmnist.train", "fmnist.runline", f"fmnist.models.{family}")


def test_each_family_covers_the_trainer_and_all_they_import():
    for family in FAMILIES:
        covered = set(codeid.train_modules(family))
        assert covered == bytecode_closure(trainer_and(family)), family
        # what the run's code reaches through function-level imports, and what a report-era list missed
        assert {"fmnist.train", "fmnist.runtime", "fmnist.features", "fmnist.data", "fmnist.recipes",
                "fmnist.augment", "fmnist.augment.batched", "fmnist.metrics"} <= covered, family
        assert f"fmnist.models.{family}" in covered
        assert ("fmnist.models.deform_ops" in covered) == (family == "deformable")
        assert not covered & BOUNDARY
        others = {f"fmnist.models.{f}" for f in FAMILIES} - {f"fmnist.models.{family}"}
        assert not covered & others, "one family's edit would rerun another's runs"


# What each family's runs hash: the trainer's modules and the family's own. Stated by name so that a
# module joining a run's identity shows in review; each is there because it computes the run.
TRAINER_CLOSURE = {
    "fmnist.train", "fmnist.runline", "fmnist.runtime", "fmnist.recipes", "fmnist.metrics",
    "fmnist.augment", "fmnist.augment.batched", "fmnist.features",
    "fmnist.amp",       # what `amp: auto` means on the run's device
    "fmnist.config",    # ConfigError, config_hash (the resume state's identity)
    "fmnist.data",      # the prepared file the run reads
    "fmnist.runfiles",  # the files it writes
    "fmnist.files",     # written whole, hashed; an unusable resume state moved aside
    "fmnist.errors",    # a damaged prepared or feature file
}
FAMILY_CLOSURE = {
    "cnn": {"fmnist.models.cnn"},
    "deformable": {"fmnist.models.deformable", "fmnist.models.deform_ops"},
    "resnet": {"fmnist.models.resnet"},
    "speedrun": {"fmnist.models.speedrun"},
    "transfer": {"fmnist.models.transfer"},
    "vgg": {"fmnist.models.vgg"},
    "vit": {"fmnist.models.vit"},
}


def test_each_familys_identity_covers_exactly_these_modules():
    assert set(FAMILY_CLOSURE) == set(FAMILIES), "a new family needs its closure stated here"
    for family in FAMILIES:
        assert set(codeid.train_modules(family)) == TRAINER_CLOSURE | FAMILY_CLOSURE[family], family
    # what a run does not compute with: GPU placement, the download, the checks of finished outputs,
    # the expansion of a config into runs
    trainer = set(codeid.closure(codeid.TRAIN_MODULES))
    assert trainer == TRAINER_CLOSURE
    assert not trainer & {"fmnist.gpus", "fmnist.fetch", "fmnist.integrity", "fmnist.experiments"}


def test_a_python_process_loads_nothing_outside_the_identity():
    """Import the trainer, then each family, in a real process: every fmnist module that loads is covered."""
    script = textwrap.dedent(f"""
        import json, sys, importlib
        mods = lambda: {{m for m in sys.modules if m == "fmnist" or m.startswith("fmnist.")}}
        import fmnist.train
        out = {{"train": sorted(mods())}}
        for family in {FAMILIES!r}:
            before = mods()
            importlib.import_module("fmnist.models." + family)
            out[family] = sorted(mods() - before)
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": ""}, cwd=REPO)
    loaded = json.loads(proc.stdout)
    trainer = set(codeid.closure(codeid.TRAIN_MODULES))
    assert set(loaded["train"]) - BOUNDARY <= trainer
    for family in FAMILIES:
        assert set(loaded[family]) - BOUNDARY <= set(codeid.train_modules(family)) - trainer, family


def copy_package(tmp_path) -> Path:
    root = tmp_path / "src" / "fmnist"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def append(path: Path, text: str) -> str:
    old = path.read_text()
    path.write_text(old + text)
    return old


def test_editing_any_covered_module_changes_its_runs_identity(tmp_path):
    """Unit level, on a copy of the package: each module a deformable run uses, edited in turn (code, not
    a comment), changes that run's identity; a comment changes nothing; the cnn runs see only theirs."""
    root = copy_package(tmp_path)
    deform = {"model": {"arch": "deformable_cnn"}}
    cnn = {"model": {"arch": "standard_cnn"}}
    base = {name: codeid.train_code_id(run, root) for name, run in (("deform", deform), ("cnn", cnn))}
    assert base["deform"] == codeid.train_code_id(deform)  # the copy is the package, byte for byte
    used = bytecode_closure(trainer_and("deformable"), root)
    assert "fmnist.models.deform_ops" in used and "fmnist.runtime" in used
    for name in sorted(used):
        path = file_of(name, root)
        old = append(path, "\n# a comment only\n")
        assert codeid.train_code_id(deform, root) == base["deform"], name
        path.write_text(old + "\n_EDITED_FOR_TEST = 1\n")
        assert codeid.train_code_id(deform, root) != base["deform"], f"an edit to {name} is not seen"
        cnn_changed = codeid.train_code_id(cnn, root) != base["cnn"]
        assert cnn_changed == (name != "fmnist.models.deform_ops" and name != "fmnist.models.deformable"), name
        path.write_text(old)
    assert codeid.train_code_id(deform, root) == base["deform"]


def test_a_preset_is_its_class_not_the_registry(monkeypatch):
    a, b = {"model": {"arch": "deformable_cnn"}}, {"model": {"arch": "deformable_cnn_bn"}}
    assert codeid.train_code_id(a) == codeid.train_code_id(b)  # same class; arguments are in the config
    preset = models.PRESETS["deformable_cnn_bn"]
    monkeypatch.setitem(models.PRESETS, "deformable_cnn_bn", type(preset)(**{**preset.__dict__, "cls": "Other"}))
    assert codeid.train_code_id(a) != codeid.train_code_id(b)
    ids = codeid.train_code_ids({"a": a, "b": b, "c": {"model": {"arch": "vit_simple"}}})
    assert ids == {r: codeid.train_code_id(run) for r, run in (("a", a), ("b", b), ("c", {"model": {"arch": "vit_simple"}}))}


def test_the_top_package_holds_only_its_version():
    """Why `fmnist` may be a boundary: its __init__ computes nothing."""
    body = __import__("ast").parse(codeid.normalise((SRC / "__init__.py").read_text())).body
    assert [__import__("ast").unparse(n).split(" =")[0] for n in body] == ["__version__"]


# Each workflow script and the roots of its rule's identity (codeid's *_MODULES).
SCRIPT_ROOTS = {
    "train.py": codeid.TRAIN_MODULES,
    "features.py": codeid.FEATURE_MODULES,
    "prepare.py": codeid.DATA_MODULES,
    "aggregate.py": codeid.AGGREGATE_MODULES,
    "report.py": codeid.REPORT_MODULES,
    "figures.py": codeid.PLOT_MODULES,
    "figure_sweep.py": codeid.PLOT_MODULES,
    "dataset_figures.py": codeid.PLOT_MODULES,
    "plot_run.py": codeid.PLOT_MODULES,
    "gallery.py": codeid.GALLERY_MODULES,
    "train_pack.py": codeid.PACK_MODULES,
    "train_link.py": codeid.PACK_MODULES,  # the train rule's script in pack mode
}


def test_every_script_imports_only_what_its_rule_identity_covers():
    scripts = {p.name for p in (REPO / "workflow" / "scripts").glob("*.py")} - {"_setup.py"}
    assert scripts == set(SCRIPT_ROOTS), "a new workflow script needs its rule's roots here and in codeid"
    for name, roots in SCRIPT_ROOTS.items():
        path = REPO / "workflow" / "scripts" / name
        placement = set(codeid.PLACEMENT_MODULES)  # where a job runs, not what it computes
        used = codeid.source_imports(path.read_text(), "", str(path)) - BOUNDARY - placement
        assert used and used <= set(codeid.closure(roots)), name
        assert bytecode_imports(path) - BOUNDARY - placement <= set(codeid.closure(roots)), name


def test_every_rule_that_computes_a_result_has_its_code_identity():
    """Every rule with a script carries `code=` in its params; download's result is pinned by hash."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    # every definition, also those under an `if` (train has one per mode, train_pack one in pack mode)
    rules = re.findall(r"^[ \t]*rule (\w+):\n(.*?)(?=^[ \t]*rule |\Z)", text, flags=re.M | re.S)
    scripted = [(name, body) for name, body in rules if "script:" in body]
    assert {"train", "train_pack", "features", "prepare", "aggregate", "report"} <= {n for n, _ in scripted}
    assert [n for n, _ in scripted].count("train") == 2
    missing = {name for name, body in scripted if name != "download" and not re.search(r"^\s+code=", body, re.M)}
    assert not missing, f"rules without a code identity: {sorted(missing)}"


def test_every_root_is_found():
    roots = {*codeid.AGGREGATE_MODULES, *codeid.REPORT_MODULES, *codeid.PLOT_MODULES, *codeid.GALLERY_MODULES,
             *codeid.TRAIN_MODULES, *codeid.FEATURE_MODULES, *codeid.DATA_MODULES}
    for name in roots | {f"fmnist.models.{f}" for f in FAMILIES}:
        assert codeid.module_file(name).is_file(), name
    with pytest.raises(ModuleNotFoundError, match="no Python source"):
        codeid.module_file("fmnist.nowhere")
    assert codeid.code_id(["fmnist.report", "fmnist.compare"]) == codeid.code_id(
        ["fmnist.compare", "fmnist.report", "fmnist.report"]
    )


def test_parsing_imports_no_torch():
    """The workflow computes identities while it parses: that must not import torch."""
    script = ("import sys; from fmnist import codeid; "
              "codeid.train_code_ids({'a': {'model': {'arch': 'deformable_cnn'}}}); "
              "codeid.features_code_id({'arch': 'resnet18'}); "
              "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": ""}).stdout
    assert out.strip() == "False"


def planned_train_runs(root, *args) -> set[str]:
    out = snakemake(root, "-n", *args).stdout
    return set(re.findall(r"rule train:.*?wildcards: run=(\S+)", out, flags=re.S))


@pytest.mark.slow
def test_a_deform_ops_edit_reruns_exactly_the_deformable_runs(tmp_path):
    """A real workflow (smoke mode: a few steps a run) on a copy, then a code edit in the copy's
    fmnist.models.deform_ops: Snakemake plans the deformable runs again and no other."""
    cfg = tiny_config()
    cfg["studies"] = {"mix": {"models": ["standard_cnn", "deformable_cnn_a", "deformable_cnn"],
                              "augmentations": ["none"], "seeds": [0]}}
    root = make_workflow(tmp_path / "wf", cfg)
    smoke = ("--config", "smoke=true")
    snakemake(root, *smoke, "--until", "train")
    assert planned_jobs(root, *smoke, "--until", "train") == {}
    ops = root / "src/fmnist/models/deform_ops.py"
    old = append(ops, "\n# a comment only\n")
    assert planned_jobs(root, *smoke, "--until", "train") == {}
    ops.write_text(old + "\n_EDITED_FOR_TEST = 1\n")
    assert planned_train_runs(root, *smoke, "--until", "train") == {
        "deformable_cnn_a.none.default.s0", "deformable_cnn.none.default.s0"}
    assert planned_jobs(root, *smoke, "--until", "train") == {"train": 2}
