"""The results table of ``batch``: one row per pair from its ``summary.json``, and statistics per column."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from shmoareg.cohort.runner import DONE, FAILED, SKIPPED, PairResult
from shmoareg.cohort.table import PairRow
from shmoareg.jsonio import dumps


@dataclass(frozen=True)
class Metric:
    """A numeric column: its key, its heading in the report and where it is in a summary."""

    key: str
    heading: str
    path: tuple[str, ...]
    digits: int = 3

    def value(self, summary: Optional[dict]) -> Optional[float]:
        """The metric in ``summary`` (None when absent or not a finite number)."""
        value: Any = summary
        for name in self.path:
            value = value.get(name) if isinstance(value, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)


METRICS = (
    Metric("mean_dice_before", "Dice before", ("metrics", "mean_dice_before")),
    Metric("mean_dice", "Dice after", ("metrics", "mean_dice")),
    Metric("mean_hd95_before_mm", "HD95 before (mm)", ("metrics", "mean_hd95_before_mm"), 2),
    Metric("mean_hd95_mm", "HD95 after (mm)", ("metrics", "mean_hd95_mm"), 2),
    Metric("tre_before_mm", "TRE before (mm)", ("metrics", "tre_before_mm"), 2),
    Metric("tre_mm", "TRE after (mm)", ("metrics", "tre_mm"), 2),
    Metric("sdlogj", "SDlogJ", ("metrics", "sdlogj")),
    Metric("fraction_nonpositive", "folding (fraction J ≤ 0)", ("metrics", "fraction_nonpositive"), 6),
    Metric("seconds", "seconds", ("seconds", "total"), 1),
    Metric("host_peak_mb", "peak memory (MB)", ("memory", "host_peak_mb"), 0),
    Metric("gpu_peak_mb", "peak GPU memory (MB)", ("memory", "gpu_peak_mb"), 0),
    Metric("network_share", "network share", ("network_share",)),
)
TEXT_COLUMNS = ("id", "status", "exit_code", "message", "rank", "fixed", "moving")
COLUMNS = (*TEXT_COLUMNS, *(metric.key for metric in METRICS))


def rows(pairs: Sequence[PairRow], results: Sequence[PairResult]) -> list[dict[str, Any]]:
    """One row per pair (in table order): its id, status, exit code, message, rank, inputs and metrics."""
    return [{"id": pair.identifier, "status": result.status, "exit_code": result.exit_code,
             "message": "; ".join([result.message, *result.notes]).strip("; "), "rank": result.rank,
             "fixed": str(pair.fixed), "moving": str(pair.moving),
             **{metric.key: metric.value(result.summary) for metric in METRICS}}
            for pair, result in zip(pairs, results)]


def statistics(table: Sequence[dict[str, Any]]) -> dict[str, dict[str, Optional[float]]]:
    """Per metric with at least one value: count, mean, median, min and max over the pairs that have it."""
    found = {}
    for metric in METRICS:
        values = [row[metric.key] for row in table if row[metric.key] is not None]
        if values:
            found[metric.key] = {"count": len(values), "mean": float(np.mean(values)),
                                   "median": float(np.median(values)), "min": min(values), "max": max(values)}
    return found


def counts(statuses: Iterable[str]) -> dict[str, int]:
    """How many pairs were registered now (``done``), skipped as finished earlier, and failed."""
    statuses = list(statuses)
    return {status: statuses.count(status) for status in (DONE, SKIPPED, FAILED)}


def write_csv(path: Path, table: Sequence[dict[str, Any]]) -> None:
    """``results.csv``: the columns of :data:`COLUMNS`, an empty cell where a value does not exist."""
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(COLUMNS)
        for row in table:
            writer.writerow(["" if row[name] is None else row[name] for name in COLUMNS])


def write_json(path: Path, table: Sequence[dict[str, Any]], header: dict[str, Any]) -> None:
    """``results.json`` (strict JSON): ``header``, the counts per status, the statistics and the rows."""
    content = {**header, "count": len(table), **counts(row["status"] for row in table),
               "statistics": statistics(table), "pairs": list(table)}
    path.write_text(dumps(content, indent=2) + "\n")
