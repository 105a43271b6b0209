"""envs/fmnist.yaml (for `--sdm conda`) is kept in step with pyproject.toml's dependencies."""

import re
import tomllib

import yaml
from conftest import REPO


def requirement(spec: str) -> tuple[str, str]:
    """('torch', '==2.14.1') from 'torch==2.14.1': normalized name, specifier without spaces."""
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*", spec)
    assert m, f"cannot read requirement {spec!r}"
    return re.sub(r"[-_.]+", "-", m.group(1)).lower(), m.group(3).replace(" ", "")


def env_pip_requirements(env: dict) -> list[str]:
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "envs/fmnist.yaml should hold exactly one `pip:` list"
    return pips[0]


def test_conda_env_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((REPO / "envs" / "fmnist.yaml").read_text())
    wanted = dict(map(requirement, project["dependencies"]))
    listed = dict(map(requirement, env_pip_requirements(env)))
    assert listed == wanted, (
        "envs/fmnist.yaml and pyproject.toml [project.dependencies] drifted apart: "
        f"only in pyproject {sorted(set(wanted.items()) - set(listed.items()))}, "
        f"only in envs {sorted(set(listed.items()) - set(wanted.items()))}; edit both together"
    )
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    floor = re.search(r">=\s*(\d+\.\d+)", project["requires-python"]).group(1)
    version = re.search(r"(\d+\.\d+)", python).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, floor.split("."))), (
        f"envs/fmnist.yaml pins {python}, below pyproject's requires-python {project['requires-python']}"
    )


def test_drift_is_noticed():
    """The comparison sees a changed pin, a missing package and name spelling differences."""
    assert requirement("torch == 2.14.1") == ("torch", "==2.14.1")
    assert requirement("PyYAML>=6") == requirement("pyyaml >= 6")
    assert requirement("snakemake>=9.11") != requirement("snakemake>=9.12")
