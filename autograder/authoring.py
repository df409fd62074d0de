"""``solutions/`` → ``exercises/``: the stub generator behind ``dsgrade sync``.

In a solutions module, the part a student writes sits between a line
``### BEGIN SOLUTION`` and a line ``### END SOLUTION``. In the exercise file the
region becomes ``raise NotImplementedError("<episode>.<name>")``, where
``<name>`` is the top-level function or class the region sits in; everything
else is kept. Files without regions are copied verbatim.

``exercises/.dsgrade-sync.json`` remembers a hash of what was last generated, so
``sync`` can tell a student's edits (kept, unless ``force``) from stale output.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
MANIFEST = ".dsgrade-sync.json"
_TOP_LEVEL = re.compile(r"^(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)")


class AuthoringError(Exception):
    """A solutions file whose regions are malformed."""


def episode_id(filename: str) -> str:
    """``ep05_self_attention.py`` → ``ep05``; ``capstone.py`` → ``capstone``."""
    return filename.split("_", 1)[0].removesuffix(".py")


def regions(text: str) -> list[tuple[int, int, str]]:
    """The solution regions of a source text.

    Returns:
        list of (begin line index, end line index, enclosing top-level name), 0-based.

    Raises:
        AuthoringError: On nested, unclosed or unopened regions, or a region outside any def/class.
    """
    lines = text.splitlines()
    found, start, owner = [], None, None
    for i, line in enumerate(lines):
        m = _TOP_LEVEL.match(line)
        if m:
            owner = m.group(1)
        marker = line.strip()
        if marker == BEGIN:
            if start is not None:
                raise AuthoringError(f"line {i + 1}: {BEGIN} inside another region (opened at line {start + 1})")
            if owner is None:
                raise AuthoringError(f"line {i + 1}: {BEGIN} outside any top-level def or class")
            start = i
        elif marker == END:
            if start is None:
                raise AuthoringError(f"line {i + 1}: {END} without {BEGIN}")
            found.append((start, i, owner))
            start = None
    if start is not None:
        raise AuthoringError(f"line {start + 1}: {BEGIN} is never closed")
    return found


def make_stub(text: str, episode: str) -> str:
    """The exercise version of one solutions source text.

    Example:
        >>> src = 'def f(x):\\n    \"\"\"Doc.\"\"\"\\n    ### BEGIN SOLUTION\\n    return x\\n    ### END SOLUTION\\n'
        >>> print(make_stub(src, "ep02"), end="")
        def f(x):
            \"\"\"Doc.\"\"\"
            raise NotImplementedError("ep02.f")
    """
    lines = text.splitlines(keepends=True)
    out, pos = [], 0
    for begin, end, owner in regions(text):
        indent = lines[begin][: len(lines[begin]) - len(lines[begin].lstrip())]
        out.extend(lines[pos:begin])
        out.append(f'{indent}raise NotImplementedError("{episode}.{owner}")\n')
        pos = end + 1
    out.extend(lines[pos:])
    return "".join(out)


def generate(solutions_dir: Path) -> dict[str, str]:
    """``{filename: exercise text}`` for every top-level ``.py`` file of ``solutions_dir``."""
    files = {}
    for path in sorted(Path(solutions_dir).glob("*.py")):
        text = path.read_text(encoding="utf-8")
        try:
            files[path.name] = make_stub(text, episode_id(path.name))
        except AuthoringError as e:
            raise AuthoringError(f"{path}: {e}") from None
    return files


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class SyncResult:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # edited by a student: not overwritten
    removed: list[str] = field(default_factory=list)


def sync(solutions_dir: Path, exercises_dir: Path, force: bool = False, dry_run: bool = False) -> SyncResult:
    """Regenerates ``exercises_dir`` from ``solutions_dir``.

    A file is overwritten only if it still holds what ``sync`` last wrote there
    (or ``force``); a file that was edited since is kept and listed in ``kept``.

    Args:
        solutions_dir: Source folder.
        exercises_dir: Generated folder.
        force: Overwrite edited files too.
        dry_run: Change nothing; report what would change (``written`` = would be written).

    Returns:
        SyncResult: What was (or would be) done to each file.
    """
    exercises_dir = Path(exercises_dir)
    manifest_path = exercises_dir / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())["files"]
    except (OSError, ValueError, KeyError):
        manifest = {}
    result = SyncResult()
    generated = generate(solutions_dir)
    new_manifest = {}
    for name, text in generated.items():
        path = exercises_dir / name
        new_manifest[name] = _digest(text)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            result.unchanged.append(name)
            continue
        edited = current is not None and manifest.get(name) != _digest(current)
        if edited and not force:
            result.kept.append(name)
            new_manifest[name] = manifest.get(name, "")
            continue
        result.written.append(name)
        if not dry_run:
            exercises_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for name, digest in manifest.items():
        path = exercises_dir / name
        if name not in generated and path.exists():
            if force or _digest(path.read_text(encoding="utf-8")) == digest:
                result.removed.append(name)
                if not dry_run:
                    path.unlink()
            else:
                result.kept.append(name)
    if not dry_run:
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"files": new_manifest}, indent=1, sort_keys=True) + "\n")
        tmp.replace(manifest_path)
    return result


def out_of_sync(solutions_dir: Path, exercises_dir: Path) -> list[str]:
    """Files of ``exercises_dir`` that differ from what the generator produces (for the test suite).

    The manifest counts too: it must record the digest of every generated file.
    """
    exercises_dir = Path(exercises_dir)
    generated = generate(solutions_dir)
    bad = [name for name, text in generated.items()
           if not (exercises_dir / name).exists() or (exercises_dir / name).read_text(encoding="utf-8") != text]
    bad += sorted({p.name for p in exercises_dir.glob("*.py")} - set(generated))
    try:
        manifest = json.loads((exercises_dir / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError):
        manifest = {}
    if manifest != {name: _digest(text) for name, text in generated.items()}:
        bad.append(MANIFEST)
    return bad
