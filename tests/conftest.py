"""Shared helpers for the package's own tests: running ``dsgrade`` and making submissions."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

# In-process tests (misconceptions, conventions) use tiny tensors: one thread is faster than
# two fighting over a small machine, and it is what the grader's worker uses.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = ROOT / "solutions"
_RELATIVE_IMPORT = re.compile(r"^from \.(\w+) import", re.M)


@dataclass
class Run:
    code: int
    out: str
    err: str
    report: dict | None


def dsgrade(*args: str, json_path: Path | None = None, cwd: Path | None = None, timeout: float = 600) -> Run:
    """Runs ``python -m autograder ARGS`` (as a student would run ``dsgrade``) and reads its JSON report."""
    cmd = [sys.executable, "-m", "autograder", *args]
    if json_path is not None:
        cmd += ["--json", str(json_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd or ROOT, timeout=timeout,
                          env=_env())
    report = json.loads(json_path.read_text()) if json_path is not None and json_path.exists() else None
    return Run(done.returncode, done.stdout, done.stderr, report)


def _env() -> dict:
    import os
    import tempfile

    env = dict(os.environ)
    env.pop("FORCE_COLOR", None)
    env["COLUMNS"] = "200"
    env.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="dsgrade-cache-"))  # keep ~/.cache clean
    return env


def copy_solutions(dest: Path) -> Path:
    """A submission folder holding a copy of every solutions module."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in SOLUTIONS.glob("*.py"):
        shutil.copy(path, dest / path.name)
    return dest


def module_of(episode_id: str) -> str:
    """The module name (``ep05_self_attention``) of an episode, from the solutions folder."""
    return next(p.stem for p in SOLUTIONS.glob(f"{episode_id}_*.py")) if episode_id != "capstone" else "capstone"


def dependents(modules: set[str]) -> set[str]:
    """Modules that import any of ``modules``, directly or indirectly (relative imports)."""
    imports = {p.stem: set(_RELATIVE_IMPORT.findall(p.read_text())) for p in SOLUTIONS.glob("*.py")}
    found = set(modules)
    changed = True
    while changed:
        changed = False
        for mod, deps in imports.items():
            if mod not in found and deps & found:
                found.add(mod)
                changed = True
    return found - set(modules)


@pytest.fixture(scope="session")
def solutions_report(tmp_path_factory) -> dict:
    """The JSON report of grading the solutions (everything), shared by tests."""
    path = tmp_path_factory.mktemp("solutions") / "report.json"
    run = dsgrade("--target", "solutions", json_path=path)
    assert run.code == 0, run.out + run.err
    return run.report


@pytest.fixture(scope="session")
def stubs_run(tmp_path_factory) -> Run:
    """Grading the generated stubs (everything), shared by tests."""
    path = tmp_path_factory.mktemp("stubs") / "report.json"
    return dsgrade(json_path=path)
