"""Where targets live, and how a folder of episode files is imported as a package.

A target is ``exercises`` (the student's copy, default), ``solutions`` (the
reference) or any folder of ``epNN_*.py`` files (a submission). The grader grades
a private copy of it (:mod:`autograder.submission`), imported in the worker as a
package named :data:`PACKAGE`, so relative imports between episode modules
(``from .ep16_rope import apply_rope``) work in every target.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS_DIR = ROOT / "solutions"
EXERCISES_DIR = ROOT / "exercises"
PACKAGE = "dsgrade_target"


class TargetError(Exception):
    """The target cannot be graded (not found, not a folder)."""


def resolve(target: str) -> Path:
    """Maps a ``--target`` value to a folder.

    Args:
        target: ``"exercises"``, ``"solutions"`` or a path.

    Returns:
        Path: The folder holding the episode modules.

    Raises:
        TargetError: If there is no such folder or it holds no episode module.
    """
    if target == "exercises":
        path = EXERCISES_DIR
    elif target == "solutions":
        path = SOLUTIONS_DIR
    else:
        try:
            path = Path(target).expanduser().resolve()
        except (OSError, RuntimeError) as e:  # RuntimeError: a symlink loop (before Python 3.13)
            raise TargetError(f"target {target!r}: {e}") from None
    if not path.is_dir():
        raise TargetError(f"target {target!r}: no folder at {path}")
    if not any(path.glob("ep[0-9][0-9]_*.py")) and not (path / "capstone.py").exists():
        raise TargetError(f"target {target!r}: {path} holds no epNN_*.py files")
    return path


def module_file(folder: Path, module: str) -> Path:
    return folder / f"{module}.py"


def load_package(folder: Path) -> None:
    """Registers ``folder`` as the package :data:`PACKAGE` (episode modules load lazily)."""
    spec = importlib.util.spec_from_file_location(
        PACKAGE, folder / "__init__.py",
        submodule_search_locations=[str(folder)],
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = package
    if (folder / "__init__.py").exists():
        spec.loader.exec_module(package)


def import_episode(folder: Path, module: str):
    """Imports one episode module of the target package.

    Raises:
        TargetError: If the target folder has no such file.
    """
    if not module_file(folder, module).exists():
        raise TargetError(f"{module}.py is not in {folder}")
    return importlib.import_module(f"{PACKAGE}.{module}")
