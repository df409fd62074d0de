"""The stub generator and ``dsgrade sync``; the committed exercises/ must be in sync."""

import pytest
from conftest import ROOT

from autograder.authoring import AuthoringError, make_stub, out_of_sync, sync

SOURCE = '''"""Module."""
import torch


def f(x):
    """Doc."""
    y = x + 1  # given
    ### BEGIN SOLUTION
    return y * 2
    ### END SOLUTION


class M(torch.nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        ### BEGIN SOLUTION
        return x
        ### END SOLUTION
'''


def test_regions_become_raises_with_the_exercise_id():
    stub = make_stub(SOURCE, "ep09")
    assert 'y = x + 1  # given\n    raise NotImplementedError("ep09.f")\n' in stub
    assert '        raise NotImplementedError("ep09.M")\n' in stub
    assert "return y * 2" not in stub and "BEGIN SOLUTION" not in stub


@pytest.mark.parametrize("bad", [
    "def f():\n    ### BEGIN SOLUTION\n    pass\n",
    "def f():\n    ### END SOLUTION\n",
    "### BEGIN SOLUTION\nx = 1\n### END SOLUTION\n",
    "def f():\n    ### BEGIN SOLUTION\n    ### BEGIN SOLUTION\n    ### END SOLUTION\n",
])
def test_malformed_regions_are_refused(bad):
    with pytest.raises(AuthoringError):
        make_stub(bad, "ep01")


def test_sync_writes_keeps_student_work_and_forces(tmp_path):
    src, dst = tmp_path / "solutions", tmp_path / "exercises"
    src.mkdir()
    (src / "ep09_x.py").write_text(SOURCE)
    (src / "config.py").write_text("A = 1\n")
    assert sorted(sync(src, dst).written) == ["config.py", "ep09_x.py"]
    assert (dst / "config.py").read_text() == "A = 1\n"  # no regions: verbatim

    (dst / "ep09_x.py").write_text((dst / "ep09_x.py").read_text() + "# my work\n")  # a student edits
    (src / "ep09_x.py").write_text(SOURCE + "\n# new material\n")
    result = sync(src, dst)
    assert result.kept == ["ep09_x.py"] and "# my work" in (dst / "ep09_x.py").read_text()
    assert sync(src, dst).kept == ["ep09_x.py"]  # still refused on the next run
    assert sync(src, dst, force=True).written == ["ep09_x.py"]
    assert "# new material" in (dst / "ep09_x.py").read_text()
    assert out_of_sync(src, dst) == []

    (src / "config.py").unlink()  # removed from the source: removed, being unedited
    assert sync(src, dst).removed == ["config.py"] and not (dst / "config.py").exists()


def test_committed_exercises_are_in_sync():
    stale = out_of_sync(ROOT / "solutions", ROOT / "exercises")
    assert stale == [], f"run `dsgrade sync`: stale exercises {stale}"
