"""``dsgrade gradescope OUT.zip``: an autograder for Gradescope, and what runs inside it.

The zip follows Gradescope's autograder specification: at its root ``setup.sh`` (run once, as
root, on Gradescope's Ubuntu image: installs Python, the CPU build of PyTorch and this package,
reference included) and ``run_autograder`` (run for every submission); beside them
``settings.json`` (seed, episodes) and ``package/``, the course's source.

``run_autograder`` calls ``python -m autograder.gradescope ROOT``: it gathers the ``.py`` files of
``ROOT/submission`` (uploaded loose or in folders), grades them in the sandbox like
``dsgrade batch`` grades one student, and writes ``ROOT/results/results.json``: the overall score,
the execution time, an output (score line, sandbox, refused files) and, per exercise, one test for
its public checks (``visible``) and one for its hidden checks (``after_published``: students see
their pass/fail and hints once grades are published; expected values never). ROOT is
``/autograder`` unless ``DSGRADE_AUTOGRADER_ROOT`` says otherwise (the test suite's fake root).
"""

from __future__ import annotations

import json
import shutil
import stat
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

from . import targets

PACKAGE_PARTS = ("pyproject.toml", "README.md", "autograder", "solutions", "exercises")

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, on its Ubuntu image when the autograder is built.
set -euo pipefail
apt-get update
apt-get install -y python3 python3-venv python3-pip libseccomp2
python3 -m venv /autograder/venv
/autograder/venv/bin/python -m pip install --upgrade pip
# The CPU build of PyTorch: Gradescope has no GPU, and the CUDA build is several GB.
/autograder/venv/bin/python -m pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.4"
/autograder/venv/bin/python -m pip install /autograder/source/package
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this for every submission: grades /autograder/submission and writes
# /autograder/results/results.json. DSGRADE_AUTOGRADER_ROOT and DSGRADE_PYTHON serve tests.
root="${DSGRADE_AUTOGRADER_ROOT:-/autograder}"
python="${DSGRADE_PYTHON:-$root/venv/bin/python}"
cd "$root"
exec "$python" -m autograder.gradescope "$root"
"""


def build_zip(out_zip: Path, *, seed: int, episodes: list[str]) -> None:
    """Writes the autograder zip (see the module's docstring)."""
    settings = {"seed": seed, "episodes": episodes}
    with zipfile.ZipFile(out_zip, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in (("setup.sh", SETUP_SH), ("run_autograder", RUN_AUTOGRADER)):
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFREG | 0o755) << 16  # executable once unpacked
            zf.writestr(info, text)
        zf.writestr("settings.json", json.dumps(settings, indent=2) + "\n")
        for part in PACKAGE_PARTS:
            path = targets.ROOT / part
            files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                         and "__pycache__" not in p.parts)
            for f in files:
                zf.write(f, f"package/{f.relative_to(targets.ROOT)}")


def results_json(report: dict, seconds: float) -> dict:
    """Gradescope's results.json from a dsgrade/1 report: one test per exercise and visibility."""
    tests = []
    for ex in report["exercises"]:
        for hidden, visibility in ((False, "visible"), (True, "after_published")):
            checks = [c for c in ex["checks"] if c["hidden"] == hidden]
            if not checks:
                continue
            score, max_score = sum(c["points"] for c in checks), sum(c["max_points"] for c in checks)
            tests.append({"name": f"{ex['id']} — {'hidden' if hidden else 'public'} checks",
                          "score": score, "max_score": max_score,
                          "status": "passed" if score == max_score else "failed",
                          "output": _output(checks), "visibility": visibility})
    # `output` is shown to students at once: the public score only (the total would give away the hidden
    # checks' score before grades are published) and no seed (it would let them compute the hidden inputs).
    public = [c for ex in report["exercises"] for c in ex["checks"] if not c["hidden"]]
    hidden_points = report["max_score"] - sum(c["max_points"] for c in public)
    lines = [(f"public checks: {sum(c['points'] for c in public):g}/{sum(c['max_points'] for c in public):g}; "
              f"hidden checks: {hidden_points:g} points, shown when grades are published")]
    box = report.get("sandbox") or {}
    lines.append(f"sandbox: {', '.join(box.get('applied') or []) or 'none'}"
                 + "".join(f"; {k} missing: {v}" for k, v in (box.get("missing") or {}).items()))
    lines += [f"not graded: {name} ({why})" for name, why in (report.get("refused_files") or {}).items()]
    if report.get("error"):
        lines.append(f"the submission could not be graded: {report['error']}")
    return {"score": report["score"], "execution_time": round(seconds, 1), "output": "\n".join(lines),
            "visibility": "visible", "tests": tests}


def _output(checks: list[dict]) -> str:
    lines, hints = [], []
    for c in checks:
        mark = "✓" if c["passed"] else "✗"
        lines.append(f"{mark} {c['id'].split('::', 1)[1]}: {c['description']} ({c['points']:g}/{c['max_points']:g})")
        lines += [f"    {line}" for line in c["message"].splitlines() if not c["passed"]]
        hints += [h for h in c["hint"].splitlines() if h and h not in hints]
    return "\n".join(lines + [f"hint: {h}" for h in hints])


def main(argv: list[str]) -> int:
    """What ``run_autograder`` runs: grade ``ROOT/submission`` and write ``ROOT/results/results.json``."""
    from .batch import error_report, gather, grade_everything
    from .plugin import Grader
    from .reference import LiveReference

    start = time.monotonic()
    root = Path(argv[0])
    settings = json.loads((root / "source" / "settings.json").read_text())
    episodes, results = settings["episodes"], root / "results"
    results.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="dsgrade-gradescope-"))
    try:
        refused = gather(root / "submission", staging)
        grader = Grader("submission", staging, settings["seed"], 5.0, LiveReference(), "auto",
                        protected=[root / "source", results, root / "submission"], episodes=episodes)
        try:
            grader.submission.refused.update(refused)
            grader.submission.label = "your upload"
            report = grade_everything(grader, episodes, 600.0)
        finally:
            grader.close()
    except Exception as e:  # noqa: BLE001 - Gradescope must always get a results.json
        traceback.print_exc()
        report = error_report("submission", f"{type(e).__name__}: {e}", settings["seed"], episodes)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    results_data = results_json(report, time.monotonic() - start)
    (results / "results.json").write_text(json.dumps(results_data, indent=2, ensure_ascii=False) + "\n")
    # run_autograder's stdout: the instructor's view
    print(f"score {report['score']:g}/{report['max_score']:g} (seed {report['seed']})")
    print(results_data["output"])
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    import os

    os._exit(code)  # no torch teardown: results.json is written
