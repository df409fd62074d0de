"""The class report of ``dsgrade batch``: one HTML page a lecturer can put on a slide.

It shows the score distribution, the pass rate of every exercise, and the misconception hints
students got most often, with counts; then a table of the students. Plots are drawn with
matplotlib and embedded as SVG, so the page is one self-contained file. Everything shown that
came from a submission (ids, hints quote only the course's text) is HTML-escaped.
"""

from __future__ import annotations

import datetime
import html
import io
import statistics
from collections import Counter

from . import registry

_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}
th{background:#f4f4f4}td.n{text-align:right}.err{color:#b00}figure{margin:1em 0}"""


def class_report(rows: list[dict], episodes: list[str], seed: int) -> str:
    """The page, from the rows of :func:`autograder.batch.row_of` (one per student)."""
    graded = [r for r in rows if not r["error"]]
    scores = [100 * r["score"] / r["max_score"] if r["max_score"] else 0.0 for r in graded]
    exercises = [ex.id for ep in episodes for ex in registry.load_episode(ep).exercises]
    pass_rate = {ex: sum(r["exercises"].get(ex) == "passed" for r in graded) / len(graded) if graded else 0.0
                 for ex in exercises}
    hints = Counter(h for r in graded for h in r["hints"]).most_common(15)
    parts = [f"<h1>Class report</h1><p>{len(rows)} students, {len(rows) - len(graded)} could not be graded; "
             f"seed {seed}; {datetime.date.today().isoformat()}.</p>"]
    if scores:
        parts.append("<table><tr><th>mean</th><th>median</th><th>min</th><th>max</th><th>full marks</th></tr>"
                     f"<tr><td class=n>{statistics.mean(scores):.1f}%</td><td class=n>{statistics.median(scores):.1f}%"
                     f"</td><td class=n>{min(scores):.1f}%</td><td class=n>{max(scores):.1f}%</td>"
                     f"<td class=n>{sum(s == 100 for s in scores)}</td></tr></table>")
        parts.append(_figure(_histogram, scores, "Score distribution (% of the points graded)"))
        parts.append(_figure(_pass_rates, pass_rate, "Pass rate per exercise (all checks passed)"))
    parts.append("<h2>The mistakes met most often</h2>")
    if hints:
        parts.append("<table><tr><th>students</th><th>exercise</th><th>hint shown</th></tr>" + "".join(
            f"<tr><td class=n>{n}</td><td>{html.escape(ex)}</td><td>{html.escape(hint)}</td></tr>"
            for (ex, hint), n in hints) + "</table>")
    else:
        parts.append("<p>No misconception hint was shown.</p>")
    parts.append("<h2>Students</h2><table><tr><th>student</th><th>score</th>"
                 + "".join(f"<th>{html.escape(ep)}</th>" for ep in episodes) + "<th></th></tr>")
    for r in rows:
        cells = "".join(f"<td class=n>{r['episodes'].get(ep, 0):g}</td>" for ep in episodes)
        student = html.escape(r["student"])
        parts.append(f"<tr><td><a href=\"{html.escape(r['student'], quote=True)}.json\">{student}</a></td>"
                     f"<td class=n>{r['score']:g}/{r['max_score']:g}</td>{cells}"
                     f"<td class=err>{html.escape(r['error'])}</td></tr>")
    parts.append("</table>")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>Class report</title><style>{_STYLE}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def load_matplotlib():
    """matplotlib's pyplot, without a display. Importing it takes about 0.6 s: ``dsgrade batch`` calls
    this as soon as a job has no student left, on the core that job frees, not after the last one."""
    import matplotlib

    matplotlib.use("Agg")  # no display: draw straight to SVG
    import matplotlib.pyplot as plt

    return plt


def _figure(draw, data, caption: str) -> str:
    plt = load_matplotlib()
    # Text as SVG text, not glyph outlines: the page is half the size, drawn four times faster, and the
    # labels can be selected and searched.
    with plt.rc_context({"svg.fonttype": "none"}):
        fig = draw(plt, data)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight")
        plt.close(fig)
    svg = buf.getvalue()
    return f"<figure>{svg[svg.index('<svg'):]}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _histogram(plt, scores: list[float]):
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(scores, bins=[i * 5 for i in range(21)], color="#4c72b0", edgecolor="white")
    ax.set_xlabel("score (%)")
    ax.set_ylabel("students")
    ax.set_xlim(0, 100)
    return fig


def _pass_rates(plt, rates: dict[str, float]):
    names = list(rates)
    fig, ax = plt.subplots(figsize=(8, 0.22 * len(names) + 1))
    ax.barh(range(len(names)), [100 * rates[n] for n in names], color="#55a868")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()  # course order from the top
    ax.set_xlim(0, 100)
    ax.set_xlabel("students who passed every check (%)")
    return fig
