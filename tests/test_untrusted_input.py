"""What the grader does with what it receives: the private copy of a submission, the worker's answers,
student text, numbers, sizes, and the sandbox's view of the filesystem (unit level; the attacks
themselves run end to end in test_sandbox.py)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch

from autograder import sandbox
from autograder.cli import parse_size
from autograder.compare import diagnose
from autograder.submission import MAX_FILE_BYTES, copy_submission, new_scratch, remove_tree
from autograder.untrusted import checked_answer, clean_text
from autograder.values import decode, encode, to_plain


# --- the private copy ---------------------------------------------------------------------------------


@pytest.fixture
def scratch():
    root = new_scratch()
    yield root
    remove_tree(root)


def test_only_regular_module_files_are_copied_and_each_refusal_says_why(tmp_path, scratch):
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "ep05_self_attention.py").write_text("x = 1\n")
    (sub / "notes.txt").write_text("not code")
    (sub / "ep04_attention_basics.py").symlink_to("/etc/passwd")
    os.mkfifo(sub / "ep06_causal_attention.py")  # reading it naively blocks forever
    with open(sub / "ep07_multihead_visual.py", "wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    (sub / "ep09_kv_cache.py").symlink_to("ep09_kv_cache.py")  # a loop
    (sub / "bad name.py").write_text("")
    (sub / "pkg.py").mkdir()
    copy = copy_submission(sub, scratch / "src", fill_from=Path(__file__).parent.parent / "exercises")
    assert copy.files == {"ep05_self_attention.py": b"x = 1\n"}
    assert copy.refused == {
        "ep04_attention_basics.py": "a symbolic link; hand in the file itself",
        "ep06_causal_attention.py": "a named pipe (FIFO), not a regular file",
        "ep07_multihead_visual.py": "1 MiB, over the limit of 1 MiB per file",
        "ep09_kv_cache.py": "a symbolic link; hand in the file itself",
        "bad name.py": "not a valid Python module name",
        "pkg.py": "a folder, not a file",
    }
    assert copy.problem("ep06_causal_attention") == (
        "ep06_causal_attention.py was not graded: it is a named pipe (FIFO), not a regular file")
    assert copy.problem("ep08_multihead_attention").startswith("ep08_multihead_attention.py is not in")
    assert copy.problem("ep05_self_attention") is None
    assert "config.py" in copy.filled and (scratch / "src" / "config.py").is_file()  # modules it lacks
    assert not (scratch / "src" / "ep04_attention_basics.py").is_symlink()
    assert copy.lines("ep05_self_attention") == ["x = 1"]


def test_the_total_size_is_capped(tmp_path, scratch, monkeypatch):
    import autograder.submission as submission

    monkeypatch.setattr(submission, "MAX_TOTAL_BYTES", 250)
    sub = tmp_path / "sub"
    sub.mkdir()
    for name in ("a.py", "b.py", "c.py"):
        (sub / name).write_text("#" * 100)
    copy = copy_submission(sub, scratch / "src")
    assert sorted(copy.files) == ["a.py", "b.py"]
    assert copy.refused == {"c.py": "100 bytes, which takes the submission over 250 bytes in all"}


def test_the_scratch_folder_goes_whatever_was_left_in_it(scratch):
    locked = scratch / "work" / "locked"
    (locked / "deep").mkdir(parents=True)
    os.mkfifo(locked / "deep" / "fifo")
    (locked / "link").symlink_to("/etc")
    locked.chmod(0o000)
    remove_tree(scratch)
    assert not scratch.exists()
    assert Path("/etc").is_dir()


# --- the worker's answers ------------------------------------------------------------------------------


def test_a_child_may_only_say_ok_not_implemented_or_error():
    assert checked_answer({"status": "ok", "result": 3}) == {"status": "ok", "result": 3}
    for forged in ({"status": "passed"}, {"status": "timeout", "message": "x"}, ["ok"], None):
        answer = checked_answer(forged)
        assert answer["status"] == "error" and "does not understand" in answer["message"]
    assert checked_answer({"status": "error", "message": "a\x1b[31m\nb"}) == {"status": "error", "message": "a ⏎ b"}


def test_student_text_loses_control_and_format_characters_and_is_cut():
    assert clean_text("\x1b[2J\x1b[Hok\rscore 620/620\x07\u202e\u200b!") == "ok ⏎ score 620/620 !"
    long = clean_text("y" * 100_000, limit=100)
    assert long.startswith("y" * 100) and long.endswith("… [99900 more characters]") and len(long) < 130
    assert clean_text("tab\there [bold]markup[/] kept") == "tab here [bold]markup[/] kept"  # printed as Text


def test_decoding_refuses_inconsistent_or_oversized_messages():
    good = encode({"x": to_plain(torch.arange(6.0).reshape(2, 3))})
    assert decode(good)["x"].shape == (2, 3)
    (n,) = struct.unpack_from("<I", good)
    header = json.loads(good[4:4 + n])
    for change in ({"shape": [1000, 1000]}, {"shape": [-1]}, {"offset": 10 ** 9}, {"np": "object"}):
        spec = dict(header["arrays"][0], **change)
        body = json.dumps(dict(header, arrays=[spec])).encode()
        with pytest.raises(ValueError):
            decode(struct.pack("<I", len(body)) + body + good[4 + n:])
    with pytest.raises(ValueError, match="header"):
        decode(good, max_header=10)


# --- numbers ---------------------------------------------------------------------------------------------


def test_integer_results_are_compared_exactly_and_must_be_integers():
    assert diagnose(671_026_522_112, 671_026_522_112) == []
    (near,) = diagnose(671_026_522_112, 671_026_522_113)  # within rtol 1e-5 of a float comparison
    assert "got 671026522113, expected 671026522112" in near
    (as_float,) = diagnose(6720, 6720.0)
    assert "got the float 6720.0; the result is an integer" in as_float
    (huge,) = diagnose(5, 10 ** 400)
    assert "(401 digits)" in huge and len(huge) < 120
    (overflow,) = diagnose(1.5, 10 ** 400)  # a float expected: no OverflowError
    assert "got inf" in overflow


def test_values_are_printed_with_enough_digits_to_differ():
    (line,) = diagnose(to_plain(torch.tensor([-1.64624], dtype=torch.float64)),
                       to_plain(torch.tensor([-1.646242], dtype=torch.float64)))
    assert "got -1.646242, expected -1.64624" in line


def test_sizes_for_memory():
    assert parse_size("2G") == 2 << 30 and parse_size("512m") == 512 << 20 and parse_size("1.5GiB") == 3 << 29
    for bad in ("", "lots", "-1G", "0"):
        with pytest.raises(Exception):
            parse_size(bad)


# --- what the sandbox lets a child read -------------------------------------------------------------------


def test_readable_paths_cut_out_exactly_the_protected_ones(tmp_path):
    site = tmp_path / "site-packages"
    for name in ("torch", "solutions", "autograder", "numpy"):
        (site / name).mkdir(parents=True)
    (site / "solutions_link").symlink_to(site / "solutions")
    (site / "README").write_text("")
    granted = sandbox.readable_paths([site], protected=[site / "solutions"])
    assert {str(site / n) for n in ("torch", "autograder", "numpy", "README")} <= set(granted)
    assert not any("solutions" in p for p in granted)
    assert str(site) not in granted


def test_this_machine_has_the_full_sandbox():
    """CI runs on Linux with user namespaces, Landlock and libseccomp: the attack tests must not skip."""
    assert sandbox.support() == dict.fromkeys(sandbox.LAYERS)
