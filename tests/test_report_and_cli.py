"""The JSON contract, the command line (exit codes, list, selectors), the pytest plugin, fixtures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from conftest import ROOT, _env, dsgrade

from autograder import registry

SCHEMA = json.loads((ROOT / "autograder" / "report_schema.json").read_text())


def test_reports_match_the_schema(solutions_report, stubs_run):
    jsonschema.validate(solutions_report, SCHEMA)
    jsonschema.validate(stubs_run.report, SCHEMA)


def test_report_totals_add_up(solutions_report):
    r = solutions_report
    assert r["schema"] == "dsgrade/1" and r["target"] == "solutions" and r["seed"] == 1234
    assert r["score"] == sum(e["score"] for e in r["episodes"])
    for ex in r["exercises"]:
        assert ex["score"] == sum(c["points"] for c in ex["checks"])
        assert ex["max_score"] == sum(c["max_points"] for c in ex["checks"])
        assert all(c["id"].startswith(ex["id"] + "::") for c in ex["checks"])


def test_selecting_an_episode_and_an_exercise(tmp_path):
    run = dsgrade("ep05", "ep06.causal_mask", "--target", "solutions", json_path=tmp_path / "r.json")
    assert run.code == 0, run.err
    assert {e["id"] for e in run.report["episodes"]} == {"ep05", "ep06"}
    assert {ex["id"] for ex in run.report["exercises"] if ex["episode"] == "ep06"} == {"ep06.causal_mask"}


@pytest.mark.parametrize("args, message", [
    (["ep5"], "did you mean ep05"),
    (["ep05.nope"], "no exercise 'ep05.nope'"),
    (["--target", "/no/such/folder"], "no folder"),
])
def test_bad_arguments_exit_2(args, message):
    run = dsgrade(*args)
    assert run.code == 2
    assert message in run.err


def test_same_seed_same_score_and_the_seed_is_printed(tmp_path):
    a = dsgrade("ep05", "--target", "solutions", "--seed", "7", json_path=tmp_path / "a.json")
    assert a.report["seed"] == 7 and "seed 7" in a.out


def test_list_shows_points_and_last_status(tmp_path):
    env_cache = tmp_path / "cache"
    env = dict(_env(), XDG_CACHE_HOME=str(env_cache))
    subprocess.run([sys.executable, "-m", "autograder", "ep04"], cwd=ROOT, env=env, capture_output=True)
    done = subprocess.run([sys.executable, "-m", "autograder", "list"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for ep in registry.all_episodes():
        assert ep.id in done.stdout
        for ex in ep.exercises:
            assert ex.id in done.stdout
    assert "not implemented (0)" in done.stdout  # ep04 was graded on the stubs
    assert "not graded yet" in done.stdout


def test_the_plugin_works_under_plain_pytest_with_markers_and_junit(tmp_path):
    junit = tmp_path / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", str(registry.CHECKS_DIR), "-c", str(ROOT / "autograder" / "pytest.ini"),
           "-p", "autograder.plugin", "--dsgrade-target", "solutions", "-m", "ep05 and public",
           "-k", "SelfAttention", f"--junitxml={junit}", "-q"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    cases = ET.parse(junit).getroot().iter("testcase")
    names = [f'{c.get("classname").rsplit(".", 2)[-2]}.{c.get("classname").rsplit(".", 1)[-1]}::{c.get("name")}'
             for c in cases]  # JUnit splits the id: classname "...ep05.SelfAttention", name "forward_random_…"
    ep05 = registry.load_episode("ep05")
    public = [chk.item_id(c) for ex in ep05.exercises if ex.name == "SelfAttention"
              for chk in ex.checks if not chk.hidden for c in chk.cases]
    assert sorted(names) == sorted(public)
    assert "dsgrade score" in done.stdout


def test_exitfirst_stops_and_the_report_is_still_complete(tmp_path):
    env_cache = tmp_path / "cache"
    env = dict(_env(), XDG_CACHE_HOME=str(env_cache))
    cmd = [sys.executable, "-m", "autograder", "ep04", "-x", "--json", str(tmp_path / "r.json")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)  # stubs: the first check fails
    report = json.loads((tmp_path / "r.json").read_text())
    checks = [c for ex in report["exercises"] for c in ex["checks"]]
    assert done.returncode == 1
    assert len(checks) == registry.load_episode("ep04").max_score  # one point per case here
    skipped = [c for c in checks if c["status"] == "skipped"]
    assert len(skipped) == len(checks) - 1 and all("not run" in c["message"] for c in skipped)
    statuses = {ex["id"]: ex["status"] for ex in report["exercises"]}
    assert statuses["ep04.attention_scores"] == "not_implemented" and statuses["ep04.context_vectors"] == "skipped"
    state = json.loads(next((env_cache / "dsgrade").glob("last-*.json")).read_text())
    assert "ep04.context_vectors" not in state, "checks that did not run must not become the last status"


def test_recorded_fixtures_replace_the_solutions(tmp_path):
    fixtures = tmp_path / "fixtures.bin"
    done = subprocess.run([sys.executable, "-m", "autograder", "fixtures", str(fixtures)], cwd=ROOT,
                          capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr
    run = dsgrade("ep05", "--target", "solutions", "--fixtures", str(fixtures), json_path=tmp_path / "r.json")
    assert run.code == 0 and run.report["score"] == run.report["max_score"]
    stubs = dsgrade("ep05", "--fixtures", str(fixtures), json_path=tmp_path / "s.json")
    assert stubs.code == 1 and stubs.report["score"] == 0
    wrong_seed = dsgrade("ep05", "--target", "solutions", "--fixtures", str(fixtures), "--seed", "5")
    assert wrong_seed.code == 2


def test_python_dash_m_and_console_script_agree():
    exe = Path(sys.executable).with_name("dsgrade")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    done = subprocess.run([str(exe), "ep04", "--target", "solutions"], cwd=ROOT, capture_output=True, text=True,
                          env=_env())
    assert done.returncode == 0 and "score" in done.stdout


def test_reset_puts_one_exercise_back_and_keeps_a_backup(tmp_path):
    sub = tmp_path / "sub"
    shutil.copytree(ROOT / "exercises", sub, ignore=shutil.ignore_patterns("__pycache__", ".*"))
    mine = (ROOT / "solutions" / "ep05_self_attention.py").read_text()
    (sub / "ep05_self_attention.py").write_text(mine + "\n# my notes\n")
    done = subprocess.run([sys.executable, "-m", "autograder", "reset", "ep05.SelfAttention", "--target", str(sub)],
                          cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = (sub / "ep05_self_attention.py").read_text()
    assert 'raise NotImplementedError("ep05.SelfAttention")' in text  # the stub is back
    assert "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])" in text and "# my notes" in text  # the rest kept
    (backup,) = (sub / ".dsgrade-backups").iterdir()
    assert backup.read_text() == mine + "\n# my notes\n"
    run = dsgrade("ep05", "--target", str(sub), json_path=tmp_path / "r.json")
    statuses = {ex["id"]: ex["status"] for ex in run.report["exercises"]}
    assert statuses == {"ep05.scaled_dot_product_attention": "passed", "ep05.SelfAttention": "not_implemented"}
    broken = subprocess.run([sys.executable, "-m", "autograder", "reset", "ep05.nope", "--target", str(sub)],
                            cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert broken.returncode == 2 and "no exercise 'ep05.nope'" in broken.stderr


def test_the_command_line_a_newcomer_meets(tmp_path):
    helped = subprocess.run([sys.executable, "-m", "autograder", "--help"], cwd=ROOT, env=_env(),
                            capture_output=True, text=True).stdout
    for command in ("list", "reset", "sync", "fixtures", "notebooks", "release", "batch", "merge", "gradescope"):
        assert f"\n  {command} " in helped, command
    for args, message in ((["ep04", "--json", str(tmp_path / "none" / "r.json")], "there is no folder"),
                          (["ep04", "--junitxml", str(tmp_path / "none" / "j.xml")], "there is no folder"),
                          (["ep04", "--fixtures", str(tmp_path / "none.bin")], "cannot read it"),
                          (["ep04", "--timeout", "0"], "greater than 0")):
        done = subprocess.run([sys.executable, "-m", "autograder", *args], cwd=ROOT, env=_env(), capture_output=True,
                              text=True)
        assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr, args
        assert len(done.stderr.strip().splitlines()) <= 6, done.stderr
    assert not (tmp_path / "none").exists()
    piped = subprocess.run([sys.executable, "-m", "autograder", "ep05", "--target", "solutions", "--json", "-"],
                           cwd=ROOT, env={k: v for k, v in _env().items() if k != "COLUMNS"},
                           capture_output=True, text=True)
    assert json.loads(piped.stdout)["score"] > 0 and "score" in piped.stderr
    assert all(line == line.rstrip() for line in piped.stderr.splitlines()), "no padding at the ends of lines"
    assert "ep05 passes every check. Next episode: ep06" in piped.stderr
    assert "--target solutions" in piped.stderr.split("Next episode")[1]
