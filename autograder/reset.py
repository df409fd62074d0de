"""``dsgrade reset ep05.SelfAttention``: one exercise back as it was handed out, the rest of the file kept.

The pristine text of the exercise comes from the stub generator (:func:`autograder.authoring.make_stub`
over ``solutions/``) or, in a student release, from the stubs it ships in ``autograder/stubs/``. Only the
exercise's own top-level definition is replaced (decorators included); the file as it was is saved first
under ``.dsgrade-backups/`` next to it, so nothing a student wrote is lost.
"""

from __future__ import annotations

import ast
import time
from pathlib import Path

from . import registry, targets
from .authoring import make_stub

STUBS_DIR = Path(__file__).with_name("stubs")  # a student release's copy of the stubs as handed out
BACKUPS = ".dsgrade-backups"


def pristine(module: str, episode_id: str) -> str:
    """The episode's file as generated (stubs in place of solutions)."""
    solution = targets.SOLUTIONS_DIR / f"{module}.py"
    if solution.is_file():
        return make_stub(solution.read_text(), episode_id)
    if (STUBS_DIR / f"{module}.py").is_file():
        return (STUBS_DIR / f"{module}.py").read_text()
    raise targets.TargetError("cannot reset: neither the course's solutions/ nor a release's stubs are here")


def reset(exercise_id: str, target_dir: Path) -> tuple[Path, Path]:
    """Replaces the definition of ``exercise_id`` in the target's file by the stub; returns (file, backup)."""
    episode_id, _, name = exercise_id.partition(".")
    if episode_id not in registry.episode_ids() or name not in [ex.name for ex in registry.load_episode(episode_id).exercises]:
        raise targets.TargetError(f"no exercise {exercise_id!r} (dsgrade list shows them all)")
    module = registry.load_episode(episode_id).module
    path = Path(target_dir) / f"{module}.py"
    if not path.is_file() or path.is_symlink():
        raise targets.TargetError(f"{path} is not a file to reset")
    current = path.read_text()
    try:
        mine = _span(current, name)
    except SyntaxError as e:
        raise targets.TargetError(f"{path.name} does not parse (line {e.lineno}: {e.msg}); fix that first, or "
                                  "restore the whole file from your course's copy") from None
    stub_text = pristine(module, episode_id)
    start, end = _span(stub_text, name)
    stub_lines, lines = stub_text.splitlines(keepends=True), current.splitlines(keepends=True)
    backup = path.parent / BACKUPS / f"{path.name}.{time.strftime('%Y%m%d-%H%M%S')}"
    backup.parent.mkdir(exist_ok=True)
    backup.write_text(current)
    if mine is None:  # the definition is gone from the student's file: put it back at the end
        lines += ["\n\n"] + stub_lines[start:end]
    else:
        lines[mine[0]:mine[1]] = stub_lines[start:end]
    path.write_text("".join(lines))
    return path, backup


def _span(text: str, name: str) -> tuple[int, int] | None:
    """0-based line range [start, end) of the top-level definition ``name`` (decorators included)."""
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            return first - 1, node.end_lineno
    return None
