"""dvc.yaml: every stage depends on the library code that computes its outputs, so that a
change to that code reruns the stage. Deps are the library's subpackages (src/coverid/data, ...)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Plumbing (src/coverid/core: configuration, paths, errors, atomic writes, logging, MLflow) and
# the package docstrings: a change there does not change what a stage computes.
PLUMBING = ("coverid/core/", "coverid/__init__.py")


def coverid_imports(path: Path) -> set[str]:
    """Dotted coverid modules (and maybe names) imported anywhere in a file, local imports too."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("coverid"):
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("coverid")}
    return out


def module_file(dotted: str) -> Path | None:
    """The source file of a dotted coverid module, None for a name that is not a module."""
    base = ROOT / "src" / Path(*dotted.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.exists():
            return p
    return None


def code_closure(script: Path) -> set[Path]:
    """Library files a script imports, transitively."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for dotted in coverid_imports(todo.pop()):
            p = module_file(dotted)
            if p is not None and p not in seen:
                seen.add(p)
                todo.append(p)
    return seen


def stages() -> dict:
    """The stages of dvc.yaml."""
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_closure_follows_local_imports(tmp_path):
    script = tmp_path / "s.py"
    script.write_text("def f():\n    from coverid.model.encoders import build_encoder\n")
    found = {p.relative_to(ROOT / "src").as_posix() for p in code_closure(script)}
    assert {"coverid/model/encoders.py", "coverid/model/bag.py", "coverid/model/layers.py"} <= found


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_depends_on_the_code_it_runs(name):
    stage = stages()[name]
    script = ROOT / stage["cmd"].split()[-1]
    deps = [str(d) for d in stage["deps"]]
    assert str(script.relative_to(ROOT)) in deps
    missing = sorted(
        rel for p in code_closure(script)
        for rel in [p.relative_to(ROOT).as_posix()]
        if not rel.startswith(tuple(f"src/{x}" for x in PLUMBING))
        if not any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps))
    assert not missing, f"dvc.yaml stage {name!r} runs {missing} without depending on them"
