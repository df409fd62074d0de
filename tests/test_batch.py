"""``dsgrade batch`` and ``dsgrade merge``: a class graded at once, as an instructor would run it.

The class: a correct student, the untouched stubs, a student with a known mistake, one whose code
hangs and crashes, one who attacks the grader, a zip (with a link and a bomb-sized member in it),
nbgrader's layout, and an empty folder. Three episodes keep the test quick.
"""

from __future__ import annotations

import csv
import json
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, _env, copy_solutions, dsgrade

EPISODES = ["ep04", "ep05", "ep06"]
SEED = "77"
NO_SCALE = "/ math.sqrt(q.shape[-1])"


def _class(root: Path) -> Path:
    subs = root / "submissions"
    subs.mkdir()
    copy_solutions(subs / "alice")
    shutil.copytree(ROOT / "exercises", subs / "bob", ignore=shutil.ignore_patterns("__pycache__", ".*"))
    carol = copy_solutions(subs / "carol")  # the classic mistake: no 1/√d_k
    path = carol / "ep05_self_attention.py"
    path.write_text(path.read_text().replace(NO_SCALE, ""))
    dave = copy_solutions(subs / "dave")  # one function hangs, one process dies
    path = dave / "ep04_attention_basics.py"
    path.write_text(path.read_text() + "\n\ndef attention_weights(scores):\n    while True:\n        pass\n"
                    "\n\ndef context_vectors(x):\n    import os\n    os._exit(7)\n")
    mallory = copy_solutions(subs / "mallory")  # reads the reference, forks, and outlives nothing
    path = mallory / "ep04_attention_basics.py"
    path.write_text(path.read_text() + f"\n\ndef attention_scores(x):\n    import os\n    os.fork()\n"
                    f"    return open({str(ROOT / 'solutions' / 'ep04_attention_basics.py')!r}).read()\n")
    with zipfile.ZipFile(subs / "zoe.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted((ROOT / "solutions").glob("*.py")):
            zf.write(p, f"my work/{p.name}")
        link = zipfile.ZipInfo("my work/notes.py")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        zf.writestr("my work/big.py", "#" * (2 << 20))  # compresses to almost nothing
    for assignment in ("ep04", "ep05", "ep06"):  # nbgrader: submitted/<student>/<assignment>/
        (subs / "nina" / assignment).mkdir(parents=True)
    for p in (ROOT / "solutions").glob("*.py"):
        shutil.copy(p, subs / "nina" / ("ep05" if p.name.startswith("ep05") else "ep04") / p.name)
    (subs / "empty").mkdir()
    return subs


def _batch(subs: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "autograder", "batch", str(subs), "--out", str(out), "--jobs", "2", "--seed", SEED,
           "--timeout", "2", *extra, *EPISODES]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    subs = _class(root)
    run = _batch(subs, root / "out")
    return subs, root, run


def _report(out: Path, student: str) -> dict:
    return json.loads((out / f"{student}.json").read_text())


def test_every_student_gets_a_report_and_a_row(graded):
    subs, root, run = graded
    assert run.returncode == 0, run.stderr[-3000:]
    out = root / "out"
    students = ["alice", "bob", "carol", "dave", "empty", "mallory", "nina", "zoe"]
    assert sorted(p.stem for p in out.glob("*.json")) == students
    with open(out / "grades.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["student"] for r in rows] == students
    assert list(rows[0]) == ["student", "total", "max", *EPISODES, "error"]
    scores = {r["student"]: float(r["total"]) for r in rows}
    full = float(rows[0]["max"])
    assert scores["alice"] == scores["zoe"] == scores["nina"] == full
    assert scores["bob"] == scores["empty"] == 0
    empty = _report(out, "empty")["exercises"][0]["checks"][0]["message"]
    assert "ep04_attention_basics.py is not in empty's submission" in empty, empty
    assert 0 < scores["carol"] < full and 0 < scores["dave"] < full and 0 < scores["mallory"] < full


def test_scores_equal_a_single_dsgrade_of_that_folder(graded, tmp_path):
    subs, root, _ = graded
    for student in ("carol", "dave", "mallory"):
        single = dsgrade(*EPISODES, "--target", str(subs / student), "--seed", SEED, "--timeout", "2",
                         json_path=tmp_path / f"{student}.json").report
        batch = _report(root / "out", student)
        assert [(c["id"], c["points"], c["status"]) for ex in batch["exercises"] for c in ex["checks"]] == \
               [(c["id"], c["points"], c["status"]) for ex in single["exercises"] for c in ex["checks"]], student


def test_a_hostile_or_broken_submission_costs_only_its_own_points(graded):
    _, root, _ = graded
    dave = {ex["id"]: ex for ex in _report(root / "out", "dave")["exercises"]}
    assert dave["ep04.attention_weights"]["status"] == "timeout"
    assert "died (exit code 7)" in dave["ep04.context_vectors"]["checks"][0]["message"]
    mallory = {ex["id"]: ex for ex in _report(root / "out", "mallory")["exercises"]}
    assert "Operation not permitted" in mallory["ep04.attention_scores"]["checks"][0]["message"]
    for report in (dave, mallory):
        for ex_id, ex in report.items():
            if ex_id not in ("ep04.attention_scores", "ep04.attention_weights", "ep04.context_vectors"):
                assert ex["score"] == ex["max_score"], ex_id


def test_the_zip_is_unpacked_without_its_link_or_its_bomb(graded):
    subs, root, _ = graded
    refused = _report(root / "out", "zoe")["refused_files"]
    assert _report(root / "out", "zoe")["target_path"] == str(subs / "zoe.zip")
    assert refused["my work/notes.py"] == "not a regular file (a link?)"
    assert "over the limit" in refused["my work/big.py"]


def test_the_class_report_shows_distribution_pass_rates_and_common_mistakes(graded):
    _, root, _ = graded
    page = (root / "out" / "report.html").read_text()
    assert page.count("<svg") == 2 and "Score distribution" in page and "Pass rate per exercise" in page
    bars = page[page.index("<svg", page.index("<svg") + 1):]
    assert ">ep05.scaled_dot_product_attention</text>" in bars  # labels are text, not glyph outlines
    assert "The scores were not scaled" in page  # carol's mistake, with its count
    assert ">carol<" in page and "8 students" in page


def test_rerunning_gives_the_same_scores_and_resume_skips_the_graded(graded):
    subs, root, _ = graded
    again = _batch(subs, root / "again")
    assert again.returncode == 0
    assert (root / "again" / "grades.csv").read_text() == (root / "out" / "grades.csv").read_text()
    before = {p.name: p.stat().st_mtime_ns for p in (root / "out").glob("*.json")}
    resumed = _batch(subs, root / "out", "--resume")
    assert resumed.returncode == 0
    assert {p.name: p.stat().st_mtime_ns for p in (root / "out").glob("*.json")} == before


def test_shards_merge_into_the_same_gradebook(graded):
    subs, root, _ = graded
    for i in (1, 2):
        assert _batch(subs, root / f"shard{i}", "--shard", f"{i}/2").returncode == 0
    shard_students = [sorted(p.stem for p in (root / f"shard{i}").glob("*.json")) for i in (1, 2)]
    assert shard_students[0] and shard_students[1] and not set(shard_students[0]) & set(shard_students[1])
    done = subprocess.run([sys.executable, "-m", "autograder", "merge", str(root / "shard1"), str(root / "shard2"),
                           "--out", str(root / "merged")], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (root / "merged" / "grades.csv").read_text() == (root / "out" / "grades.csv").read_text()


def test_merge_refuses_mixed_episodes_and_names_a_missing_shard(graded, tmp_path):
    """An --out folder inside SUBMISSIONS_DIR is no student; shards of other episodes are not merged; a
    missing shard is named (the outputs are still written, exit 1)."""
    subs, root, _ = graded
    here = shutil.copytree(subs, tmp_path / "submissions", symlinks=True)
    cmd = [sys.executable, "-m", "autograder", "batch", str(here), "--out", str(here / "zz_grades"), "--jobs", "2",
           "--seed", SEED, "--timeout", "2", "--shard", "1/2", "ep04"]
    assert subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900).returncode == 0
    assert sorted(p.stem for p in (here / "zz_grades").glob("*.json")) == ["alice", "carol", "empty", "nina"]

    def merge(*shards: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "autograder", "merge", *map(str, shards), "--out",
                               str(tmp_path / "merged")], cwd=ROOT, env=_env(), capture_output=True, text=True)

    mixed = merge(root / "shard2", here / "zz_grades")
    assert mixed.returncode == 2 and "different episodes: ep04; ep04 ep05 ep06" in mixed.stderr, mixed.stderr
    alone = merge(root / "shard1")
    assert alone.returncode == 1 and "shard 2 of 2 is not among them" in alone.stderr, alone.stderr
    assert (tmp_path / "merged" / "grades.csv").read_text().count("\n") == 1 + 4


def test_bad_batch_arguments_exit_2(tmp_path):
    for args in (["batch", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
                 ["batch", str(tmp_path), "--out", str(tmp_path / "o"), "--shard", "3/2"],
                 ["batch", str(tmp_path), "--out", str(tmp_path / "o"), "ep05.SelfAttention"]):
        done = subprocess.run([sys.executable, "-m", "autograder", *args], cwd=ROOT, env=_env(),
                              capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.strip(), args


def test_the_jobs_start_while_the_reference_is_computed(tmp_path, monkeypatch):
    import multiprocessing

    from autograder import batch, reference, sandbox

    subs = tmp_path / "submissions"
    copy_solutions(subs / "alice")
    copy_solutions(subs / "bob")
    running_jobs = []

    def record(*args, **kwargs):  # the jobs' workers import torch meanwhile, on the other core
        running_jobs.append(len(multiprocessing.active_children()))
        return record_fixtures(*args, **kwargs)

    record_fixtures = reference.record_fixtures
    monkeypatch.setattr(reference, "record_fixtures", record)
    status = batch.run_batch(subs, tmp_path / "out", jobs=2, seed=1, timeout=2.0, submission_timeout=60.0,
                             sandbox_mode="auto", memory=sandbox.DEFAULT_MEMORY, episodes=["ep01"])
    assert status == 0 and running_jobs == [2]
    assert (tmp_path / "out" / "grades.csv").read_text().count("\n") == 3


def test_a_slow_submission_is_cut_at_its_time_limit_and_the_next_is_graded_in_full(tmp_path):
    """--submission-timeout bounds a student in all, even when each check stays within --timeout: the
    request in progress is cut at the limit (not at the end of its check's time), the rest is not run,
    and the next student on the same worker gets every answer of their own (no stale answer in the pipe)."""
    subs = tmp_path / "submissions"
    slow = copy_solutions(subs / "a_slow")
    path = slow / "ep04_attention_basics.py"
    path.write_text(path.read_text() + "\n\n_right = attention_scores\n\n\ndef attention_scores(x):\n"
                    "    import time\n    time.sleep(20)\n    return _right(x)\n")
    copy_solutions(subs / "b_right")
    cmd = [sys.executable, "-m", "autograder", "batch", str(subs), "--out", str(tmp_path / "out"), "--jobs", "1",
           "--seed", SEED, "--timeout", "30", "--submission-timeout", "4", *EPISODES]
    run = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    checks = [c for ex in _report(tmp_path / "out", "a_slow")["exercises"] for c in ex["checks"]]
    assert checks[0]["status"] == "timeout" and "used up its time limit" in checks[0]["message"], checks[0]
    assert all(c["status"] == "timeout" and "not run" in c["message"] for c in checks[1:]), checks[1]
    right = _report(tmp_path / "out", "b_right")
    assert right["score"] == right["max_score"] > 0
