"""Each package declares what it imports (the cheap, static half of `nox -s package`),
and every package shares one version."""

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECTS = sorted(ROOT.glob("packages/*/pyproject.toml")) + [ROOT / "templates/aiprod-plugin/pyproject.toml"]
MODULE_TO_DISTS = md.packages_distributions()


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(project: dict) -> set[str]:
    deps = list(project.get("dependencies", []))
    deps += [d for extra in project.get("optional-dependencies", {}).values() for d in extra]
    return {_norm(re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0]) for d in deps}


def _imports(src: Path) -> set[str]:
    names = set()
    for f in src.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("pyproject", PYPROJECTS, ids=lambda p: p.parent.name)
def test_imports_are_declared(pyproject):
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = _declared(project) | {_norm(project["name"])}
    own = {p.name for p in (pyproject.parent / "src").iterdir() if p.is_dir()}
    missing = []
    for mod in sorted(_imports(pyproject.parent / "src") - own - set(sys.stdlib_module_names)):
        dists = {_norm(d) for d in MODULE_TO_DISTS.get(mod, [])}
        if not dists:
            missing.append(f"{mod} (not installed)")
        elif not dists & declared and not ("aiprod-core" in declared and dists & CORE_DEPS):
            missing.append(f"{mod} (from {', '.join(sorted(dists))})")
    assert not missing, f"{pyproject.parent.name} imports undeclared: {', '.join(missing)}"


CORE_DEPS = {_norm(re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0]) for d in tomllib.loads(
    (ROOT / "packages/aiprod-core/pyproject.toml").read_text())["project"]["dependencies"]}


def test_one_version_for_all_first_party_packages():
    versions = {tomllib.loads(p.read_text())["project"]["version"] for p in PYPROJECTS if "packages" in p.parts}
    assert len(versions) == 1, versions


def test_core_does_not_depend_on_heavy_libraries():
    deps = CORE_DEPS
    for heavy in ("transformers", "peft", "torchaudio", "av", "diffusers", "optimum-quanto"):
        assert heavy not in deps


def test_core_cli_imports_no_heavy_library():
    import subprocess

    code = (
        "import sys; from aiprod_core.cli import build_cli; build_cli(); "
        "heavy = [m for m in ('transformers', 'torchaudio', 'peft', 'av', 'diffusers') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    env = {**__import__("os").environ, "AIPROD_LOAD_PLUGINS": "core"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"aiprod-core imported {out.stdout.strip()}"
