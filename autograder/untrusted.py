"""Everything the grader receives from student code, made safe to keep, compare and print.

Student code controls every byte the worker sends and every string in it: the
status of an answer, exception messages, printed output, dict keys, type names.
This module is the one place that turns such data into something the grader
may store in a report or show on a terminal:

* :func:`clean_text` strips control and format characters (ANSI escapes, carriage
  returns, bidirectional overrides), folds line breaks into spaces so no forged
  line can start at the left margin, and truncates to a few KiB;
* :func:`checked_answer` accepts only the statuses a student's process may report.

Rich markup (``[bold]…``) is not escaped here: the report prints student text as
``rich.text.Text``, never as markup (see :mod:`autograder.report`).
"""

from __future__ import annotations

import re
import unicodedata

MAX_ANSWER_BYTES = 64 << 20  # a probe's whole result, before anything is decoded
MAX_MESSAGE_CHARS = 2000  # one message from student code (an exception, printed output)
MAX_NAME_CHARS = 80  # a dict key, a type name

# Statuses a student's process may report for a check; "timeout" and "died" come only from the zygote.
CHILD_STATUSES = ("ok", "not_implemented", "error")

_BREAKS = re.compile(r"[\r\n\v\f\x85\u2028\u2029]+")
_ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")


def clean_text(text, limit: int = MAX_MESSAGE_CHARS) -> str:
    """One line of printable text from whatever student code produced.

    Args:
        text: Any object; it is converted with ``str``.
        limit: Characters kept; the rest is replaced by a note of how many were cut.

    Returns:
        str: The text without control or format characters, line breaks folded into " ⏎ ".

    Example:
        >>> clean_text("ok\\x1b[2J\\rscore 620/620\\nnext")
        'ok score 620/620 ⏎ next'
    """
    text = str(text)
    length = len(text)
    if length > 4 * limit:  # do not scan megabytes to keep a few thousand characters
        text = text[:4 * limit]
    if not (text.isascii() and text.isprintable()):  # printable ASCII (most text) has nothing to remove
        text = _ANSI.sub("", text)
        text = _BREAKS.sub(" ⏎ ", text)
        text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = re.sub(r" {2,}", " ", text).strip()
    if len(text) > limit:
        text = f"{text[:limit]}… [{max(length, len(text)) - limit} more characters]"
    return text


def clean_lines(text: str) -> str:
    """A multi-line message built by the grader, each line cleaned (it may quote student strings,
    already cut to :data:`MAX_MESSAGE_CHARS`: the grader's own words around them get room too)."""
    return "\n".join(clean_text(line, 2 * MAX_MESSAGE_CHARS) for line in str(text).split("\n"))


def checked_answer(tree) -> dict:
    """The answer a student's process sent for one check, reduced to what it may say.

    Args:
        tree: The decoded plain tree.

    Returns:
        dict: ``{"status": "ok", "result": …}`` or ``{"status": "not_implemented" | "error",
        "message": clean text}``.
    """
    if not isinstance(tree, dict) or tree.get("status") not in CHILD_STATUSES:
        return {"status": "error", "message": "the process running your code sent an answer the grader does "
                                              "not understand (did your code write to the grader's pipe?)"}
    # What the child says about the exercises this one called and uses (autograder.dependencies checks it).
    deps = {k: tree[k] for k in ("recorded", "calls", "uses", "stubs") if k in tree}
    if tree["status"] == "ok":
        return {"status": "ok", "result": tree.get("result"), **deps}
    return {"status": tree["status"], "message": clean_text(tree.get("message", "")), **deps}


def format_bytes(n: int) -> str:
    """``2 GiB``, ``64 MiB``, ``1.5 KiB``: a size for messages.

    Example:
        >>> format_bytes(2 << 30), format_bytes(1536)
        ('2 GiB', '1.5 KiB')
    """
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"
