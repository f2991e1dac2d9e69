"""The HTML report of ``batch``: ``report.html`` and one page per pair, self-contained (inline CSS and
JavaScript, no network), with the pictures as files beside them.

``report.html`` has the table of pairs (sortable by any column but the thumbnail: click a heading,
again to reverse; empty cells stay last), summary statistics and a distribution plot per metric.
Each thumbnail links to the pair's page (``<id>/pair.html``: its numbers, per label and point, the
full overview, or its error). ``report.html?selftest=1`` sorts every sortable column both ways
after the page loaded and writes the row orders, the state of every image and any error into
``<pre id="selftest">`` (for the browser test in ``Testing/engine/test_batch.py``).
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import quote

from shmoareg.cohort.plots import strip_plot
from shmoareg.cohort.results import METRICS, Metric, counts
from shmoareg.cohort.runner import DONE, FAILED, SKIPPED, PairResult
from shmoareg.outputs import StagedOutputs
from shmoareg.protocol import (COMPLETION_MARKER, OVERVIEW_FILE, PAIR_PAGE_FILE, REPORT_FILE, RESULTS_CSV_FILE,
                               RESULTS_JSON_FILE, THUMBNAIL_FILE)

THUMBNAIL_WIDTH = 180
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; } th, td { border: 1px solid #ccc; padding: 3px 7px; vertical-align: middle; }
th { background: #f2f2f2; text-align: left; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
th[data-type] { cursor: pointer; user-select: none; } th[data-type]::after { content: " \\2195"; color: #999; }
th[aria-sort=ascending]::after { content: " \\2191"; color: #222; }
th[aria-sort=descending]::after { content: " \\2193"; color: #222; }
tr.failed td { background: #fdecea; } .message { max-width: 40em; font-size: 0.9em; }
.meta { color: #555; } .plots { display: flex; flex-wrap: wrap; gap: 8px; }
.plot { border: 1px solid #ddd; font-size: 11px; } .plot-title { font-weight: bold; }
.box { fill: #cfe0f5; stroke: #4a78b0; } .median { stroke: #1d3f6e; stroke-width: 2; }
.whisker { stroke: #4a78b0; } .dot { fill: #d9534f; fill-opacity: 0.75; }
img.overview { max-width: 100%; } .error { color: #a11; font-weight: bold; }
"""
# Records every error (a script's, or an image that fails to load) for the self-test.
ERROR_CATCHER = """
window.reportErrors = [];
addEventListener("error", e => reportErrors.push(e.message || ("failed to load " + (e.target.src || e.target))), true);
"""
SORTING = """
(function () {
  const table = document.getElementById("pairs"), body = table.tBodies[0];
  const headers = Array.from(table.tHead.rows[0].cells).filter(h => h.dataset.type);
  function key(row, index, numeric) {
    const value = row.cells[index].dataset.value;
    return value === undefined || value === "" ? null : (numeric ? Number(value) : value);
  }
  function sortBy(header) {
    const index = header.cellIndex, numeric = header.dataset.type === "number";
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = key(a, index, numeric), y = key(b, index, numeric);
      if (x === null || y === null) return (x === null) - (y === null);
      const order = numeric ? x - y : x.localeCompare(y, undefined, {numeric: true});
      return ascending ? order : -order;
    });
    headers.forEach(h => h.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    body.append(...rows);
  }
  for (const header of headers) {
    header.tabIndex = 0;
    header.addEventListener("click", () => sortBy(header));
    header.addEventListener("keydown", e => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(header); }
    });
  }
  function order() { return Array.from(body.rows, row => row.dataset.id); }
  function selfTest() {
    const result = {rows: body.rows.length, pairs: Number(table.dataset.pairs), original: order(), sorts: {}};
    for (const header of headers) {
      header.click();
      const ascending = order();
      header.click();
      result.sorts[header.dataset.key] = {ascending: ascending, descending: order()};
    }
    result.images = Array.from(document.images, image => ({
      src: image.getAttribute("src"), loaded: image.complete && image.naturalWidth > 0}));
    result.errors = window.reportErrors;
    const out = document.getElementById("selftest");
    out.textContent = JSON.stringify(result);
    out.hidden = false;
  }
  if (new URLSearchParams(location.search).has("selftest")) {
    if (document.readyState === "complete") selfTest(); else addEventListener("load", selfTest);
  }
})();
"""


def write_report(staged: StagedOutputs, output_dir: Path, table: Sequence[dict[str, Any]],
                 results: Sequence[PairResult], statistics: dict[str, dict], header: dict[str, Any]) -> None:
    """Stage ``report.html`` and every pair's page; pictures are read from the pairs' folders in ``output_dir``."""
    shown = [metric for metric in METRICS if metric.key in statistics]
    staged.path(REPORT_FILE).write_text(_page("SHMoAReg batch report", "".join([
        "<h1>SHMoAReg batch report</h1>",
        _overview_line(table, header),
        "<h2>Pairs</h2><p>Click a column heading to sort by it, again to reverse. "
        "A thumbnail opens the pair's page.</p>",
        _pairs_table(table, shown, output_dir),
        "<h2>Summary statistics</h2>",
        _statistics_table(shown, statistics, table),
        "<h2>Distributions</h2><div class=\"plots\">",
        *(strip_plot(metric.heading, [(row["id"], row[metric.key]) for row in table if row[metric.key] is not None],
                     metric.digits) for metric in shown),
        "</div>", '<pre id="selftest" hidden></pre>', f"<script>{SORTING}</script>",
    ])))
    for row, result in zip(table, results):
        page = staged.path(f"{row['id']}/{PAIR_PAGE_FILE}")
        page.write_text(_pair_page(row, result, output_dir / row["id"]))


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style>'
            f"<script>{ERROR_CATCHER}</script></head><body>{body}</body></html>\n")


def _number(value: Optional[float], digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _overview_line(table: Sequence[dict[str, Any]], header: dict[str, Any]) -> str:
    found = counts(row["status"] for row in table)
    options = ", ".join(f"{name} {value}" for name, value in header["options"].items() if value is not None)
    return (f'<p class="meta">{len(table)} pairs: {found[DONE]} registered now, {found[SKIPPED]} finished by an '
            f'earlier run, {found[FAILED]} failed. Table: {escape(header["pairs_table"])}. Options: '
            f'{escape(options)}. Written {escape(header["written"])}. Also: <a href="{RESULTS_CSV_FILE}">'
            f'{RESULTS_CSV_FILE}</a>, <a href="{RESULTS_JSON_FILE}">{RESULTS_JSON_FILE}</a>.</p>')


def _pairs_table(table: Sequence[dict[str, Any]], shown: Sequence[Metric], output_dir: Path) -> str:
    headings = ['<th>overview</th>', '<th data-type="text" data-key="id">pair</th>',
                '<th data-type="text" data-key="status">status</th>',
                '<th data-type="number" data-key="exit_code">exit code</th>',
                *(f'<th data-type="number" data-key="{metric.key}">{escape(metric.heading)}</th>' for metric in shown),
                '<th data-type="text" data-key="message">message</th>']
    lines = []
    for row in table:
        link = f"{quote(row['id'])}/{PAIR_PAGE_FILE}"
        if row["status"] != FAILED and (output_dir / row["id"] / THUMBNAIL_FILE).is_file():
            picture = (f'<a href="{link}"><img src="{quote(row["id"])}/{THUMBNAIL_FILE}" width="{THUMBNAIL_WIDTH}" '
                       f'alt="overview of {escape(row["id"])}"></a>')
        else:
            picture = f'<a href="{link}">no overview</a>'
        cells = [f"<td>{picture}</td>",
                 f'<td data-value="{escape(row["id"])}"><a href="{link}">{escape(row["id"])}</a></td>',
                 f'<td data-value="{row["status"]}">{row["status"]}</td>',
                 f'<td class="number" data-value="{row["exit_code"]}">{row["exit_code"]}</td>',
                 *(f'<td class="number" data-value="{"" if row[m.key] is None else repr(row[m.key])}">'
                   f'{_number(row[m.key], m.digits)}</td>' for m in shown),
                 f'<td class="message" data-value="{escape(row["message"])}">{escape(row["message"])}</td>']
        failed = ' class="failed"' if row["status"] == FAILED else ""
        lines.append(f'<tr data-id="{escape(row["id"])}"{failed}>{"".join(cells)}</tr>')
    return (f'<table id="pairs" data-pairs="{len(table)}"><thead><tr>{"".join(headings)}</tr></thead>'
            f'<tbody>{"".join(lines)}</tbody></table>')


def _statistics_table(shown: Sequence[Metric], statistics: dict[str, dict], table: Sequence[dict]) -> str:
    if not shown:
        return "<p>No pair finished, so there is nothing to summarise.</p>"
    lines = ["<table><thead><tr><th>metric</th><th>pairs</th><th>mean</th><th>median</th><th>min</th><th>max</th>"
             "</tr></thead><tbody>"]
    for metric in shown:
        numbers = statistics[metric.key]
        values = "".join(f'<td class="number">{_number(numbers[name], metric.digits)}</td>'
                         for name in ("mean", "median", "min", "max"))
        lines.append(f'<tr><td>{escape(metric.heading)}</td><td class="number">{numbers["count"]} of {len(table)}'
                     f"</td>{values}</tr>")
    return "".join(lines) + "</tbody></table>"


def _pair_page(row: dict[str, Any], result: PairResult, folder: Path) -> str:
    parts = [f'<p><a href="../{REPORT_FILE}">&larr; all pairs</a></p><h1>Pair {escape(row["id"])}</h1>',
             f"<p>Fixed: {escape(row['fixed'])}<br>Moving: {escape(row['moving'])}<br>Status: {row['status']}"
             f" (exit code {row['exit_code']}, rank {row['rank']})</p>"]
    if row["message"]:
        parts.append(f'<p class="{"error" if row["status"] == FAILED else "meta"}">{escape(row["message"])}</p>')
    if result.summary is not None:
        numbers = "".join(f"<tr><td>{escape(m.heading)}</td><td class=\"number\">{_number(row[m.key], m.digits)}</td>"
                          "</tr>" for m in METRICS if row[m.key] is not None)
        parts.append(f"<h2>Metrics</h2><table><tbody>{numbers}</tbody></table>")
        parts.append(_per_label(result.summary.get("metrics", {})))
        parts.append(f'<p>All numbers and settings: <a href="{COMPLETION_MARKER}">{COMPLETION_MARKER}</a>.</p>')
    if result.summary is not None and (folder / OVERVIEW_FILE).is_file():
        parts.append(f'<h2>Overview</h2><img class="overview" src="{OVERVIEW_FILE}" alt="overview of '
                     f'{escape(row["id"])}">')
    return _page(f"Pair {row['id']}", "".join(parts))


def _per_label(metrics: dict[str, Any]) -> str:
    """Dice and HD95 per label, TRE per landmark, before and after (where the run had them)."""
    parts = []
    labels = sorted(metrics.get("dice", {}), key=lambda label: (len(label), label))
    if labels:
        lines = "".join(
            f"<tr><td>{escape(label)}</td>" + "".join(
                f'<td class="number">{_number(metrics.get(name, {}).get(label), digits)}</td>'
                for name, digits in (("dice_before", 3), ("dice", 3), ("hd95_before_mm", 2), ("hd95_mm", 2)))
            + "</tr>" for label in labels)
        parts.append("<h2>Per label</h2><table><thead><tr><th>label</th><th>Dice before</th><th>Dice after</th>"
                     f"<th>HD95 before (mm)</th><th>HD95 after (mm)</th></tr></thead><tbody>{lines}</tbody></table>")
    points = metrics.get("landmark_labels") or []
    if points:
        lines = "".join(f"<tr><td>{escape(str(label))}</td><td class=\"number\">{_number(before, 2)}</td>"
                        f"<td class=\"number\">{_number(after, 2)}</td></tr>"
                        for label, before, after in zip(points, metrics.get("tre_before_per_point_mm", []),
                                                        metrics.get("tre_per_point_mm", [])))
        parts.append("<h2>Per landmark</h2><table><thead><tr><th>point</th><th>TRE before (mm)</th>"
                     f"<th>TRE after (mm)</th></tr></thead><tbody>{lines}</tbody></table>")
    return "".join(parts)
