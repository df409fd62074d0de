"""``dsgrade gradescope``: the zip, unpacked into a fake /autograder, grades a submission like dsgrade does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import jsonschema
import pytest
from conftest import ROOT, _env, copy_solutions, dsgrade

SCHEMA = json.loads((Path(__file__).parent / "gradescope_results.schema.json").read_text())
EPISODES = ["ep04", "ep05"]


@pytest.fixture(scope="module")
def autograder_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gradescope") / "autograder.zip"
    done = subprocess.run([sys.executable, "-m", "autograder", "gradescope", str(out), "--seed", "99", *EPISODES],
                          cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


def _run_autograder(zip_path: Path, root: Path, submission: Path) -> dict:
    """Lays out a fake Gradescope root (source = the unpacked zip) and runs run_autograder in it."""
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(root / "source")
        for info in zf.infolist():  # zipfile drops permissions: restore the executable bits as unzip would
            mode = info.external_attr >> 16
            if mode:
                os.chmod(root / "source" / info.filename, mode & 0o777)
    shutil.copytree(submission, root / "submission")
    env = dict(_env(), DSGRADE_AUTOGRADER_ROOT=str(root), DSGRADE_PYTHON=sys.executable)
    done = subprocess.run([str(root / "source" / "run_autograder")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((root / "results" / "results.json").read_text())


def test_the_zip_has_what_gradescope_needs(autograder_zip):
    with zipfile.ZipFile(autograder_zip) as zf:
        names = zf.namelist()
        modes = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
        setup = zf.read("setup.sh").decode()
    assert {"setup.sh", "run_autograder", "settings.json", "package/pyproject.toml"} <= set(names)
    assert any(n.startswith("package/solutions/") for n in names)  # hidden checks need the reference
    assert not any(n.startswith("package/tests/") or "__pycache__" in n for n in names)
    assert modes["run_autograder"] & 0o111 and modes["setup.sh"] & 0o111
    assert "download.pytorch.org/whl/cpu" in setup and "pip install /autograder/source/package" in setup


def test_results_match_the_format_and_dsgrade_s_scores(autograder_zip, tmp_path):
    sub = copy_solutions(tmp_path / "sub")
    path = sub / "ep05_self_attention.py"
    path.write_text(path.read_text().replace("/ math.sqrt(q.shape[-1])", ""))
    upload = tmp_path / "upload"
    (upload / "my_folder").mkdir(parents=True)  # some files loose, some in a folder
    for p in sub.glob("*.py"):
        shutil.copy(p, upload / ("my_folder" if p.name.startswith("ep05") else "") / p.name)
    results = _run_autograder(autograder_zip, tmp_path / "root", upload)
    jsonschema.validate(results, SCHEMA)
    single = dsgrade(*EPISODES, "--target", str(sub), "--seed", "99", json_path=tmp_path / "r.json").report
    assert results["score"] == single["score"] < single["max_score"]
    assert sum(t["max_score"] for t in results["tests"]) == single["max_score"]
    by_name = {t["name"]: t for t in results["tests"]}
    public = by_name["ep05.scaled_dot_product_attention — public checks"]
    hidden = by_name["ep05.scaled_dot_product_attention — hidden checks"]
    assert public["visibility"] == "visible" and hidden["visibility"] == "after_published"
    assert public["status"] == hidden["status"] == "failed"
    assert "hint: The scores were not scaled" in public["output"] and "expected" in public["output"]
    assert "hint: The scores were not scaled" in hidden["output"] and "expected" not in hidden["output"]
    assert "sandbox: namespaces, landlock, seccomp" in results["output"]
    # shown to students at once: the public score, not the total (it would tell the hidden one), no seed
    public_points = sum(c["points"] for ex in single["exercises"] for c in ex["checks"] if not c["hidden"])
    assert results["output"].startswith(f"public checks: {public_points:g}/")
    assert f"{results['score']:g}/{single['max_score']:g}" not in results["output"] and "99" not in results["output"]


def test_a_submission_that_cannot_be_graded_still_gets_results(autograder_zip, tmp_path):
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "ep04_attention_basics.py").write_text("raise SystemExit('no')\n")
    results = _run_autograder(autograder_zip, tmp_path / "root", upload)
    jsonschema.validate(results, SCHEMA)
    assert results["score"] == 0 and results["tests"]
