"""``batch``: register every pair of a table into ``<output>/<id>/``, resumably and dealt over torchrun's ranks;
each pair's rank draws its overview; rank 0 then writes ``results.csv``, ``results.json`` and the report.

Rank 0 holds the output folder (:class:`~shmoareg.outputs.OutputFolder`: one batch at a time, stale
staging folders removed) from the start until the report is written; every pair's folder is held
by the pair's own run the same way. A pair whose folder holds a finished run (``summary.json``)
is skipped, so a rerun of the same command continues where a stopped one ended.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional, Sequence

import SimpleITK as sitk

from shmoareg import __version__
from shmoareg.cohort.report import write_report
from shmoareg.cohort.results import counts, rows, statistics, write_csv, write_json
from shmoareg.cohort.runner import DONE, FAILED, SKIPPED, PairJob, PairResult, run_pairs
from shmoareg.cohort.table import PairRow
from shmoareg.errors import Cancelled
from shmoareg.failures import describe_failure
from shmoareg.outputs import OutputFolder, StagedOutputs
from shmoareg.pipeline import RegistrationRequest
from shmoareg.progress import Progress
from shmoareg.protocol import (JACOBIAN_OUTPUT, OVERVIEW_FILE, REPORT_FILE, RESULTS_CSV_FILE, RESULTS_JSON_FILE,
                               THUMBNAIL_FILE, ExitCode)
from shmoareg.training.distributed import launch_rank

REPORT_WEIGHT = 0.05  # share of the progress bar for the tables and the report (the pairs have the rest)


@dataclass(frozen=True)
class BatchOutcome:
    """How the batch ended (on rank 0): 0 when every pair finished, else the failed pairs' exit code (1 when they
    differ); a one-line message; the files written."""

    exit_code: int
    message: str
    outputs: dict[str, str]


def run_batch(pairs: Sequence[PairRow], pairs_table: Path, output_dir: str | os.PathLike, options: dict[str, Any],
              progress: Progress) -> Optional[BatchOutcome]:
    """Register ``pairs`` (read from ``pairs_table``) with the register ``options``; returns the outcome on rank 0
    and None on the other ranks."""
    output_dir = Path(output_dir)
    # Each pair's overview shows the Jacobian determinant: every pair writes it.
    options = {**options, "extra_outputs": tuple(sorted({*options.get("extra_outputs", ()), JACOBIAN_OUTPUT}))}
    jobs = [PairJob(pair.identifier, RegistrationRequest(
        fixed=pair.fixed, moving=pair.moving, output_dir=output_dir / pair.identifier,
        fixed_segmentation=pair.fixed_seg, moving_segmentation=pair.moving_seg,
        fixed_landmarks=pair.fixed_landmarks, moving_landmarks=pair.moving_landmarks, **options)) for pair in pairs]
    with OutputFolder(output_dir) if launch_rank() == 0 else nullcontext():
        results = run_pairs(jobs, device=options["device"], resume=True, progress=progress, after=draw_overview,
                            progress_weight=1 - REPORT_WEIGHT)
        if results is None:
            return None
        with progress.stage("report", "writing the tables and the report", weight=REPORT_WEIGHT):
            header = {"shmoareg_version": __version__, "pairs_table": str(pairs_table), "output_dir": str(output_dir),
                      "options": options, "written": datetime.now().astimezone().isoformat(timespec="seconds")}
            outputs = _write_tables_and_report(output_dir, pairs, results, header)
    return _outcome(results, outputs, output_dir)


def draw_overview(job: PairJob, result: PairResult) -> None:
    """Draw a finished pair's overview and its thumbnail into its folder (kept when the pair was skipped and has
    them). A failure to draw is a note on the pair's result, not a failed pair."""
    folder = job.request.output_dir
    if result.status == FAILED or (result.status == SKIPPED and (folder / THUMBNAIL_FILE).is_file()):
        return
    try:
        from shmoareg.overview import write_overview, write_thumbnail

        with OutputFolder(folder):
            staged = StagedOutputs(folder)
            try:
                write_overview(sitk.ReadImage(str(job.request.fixed)), sitk.ReadImage(str(job.request.moving)),
                               folder, staged.path(OVERVIEW_FILE))
                write_thumbnail(staged.path(OVERVIEW_FILE), staged.path(THUMBNAIL_FILE))
                staged.move_in()
            finally:
                staged.discard()
    except Cancelled:
        raise
    except ImportError as error:
        result.notes.append(f"no overview: {error.name} is not installed (pip install 'shmoareg[viz]')")
    except Exception as error:  # noqa: BLE001 - the registration itself finished
        result.notes.append(f"no overview: {describe_failure(error)[1]}")


def _write_tables_and_report(output_dir: Path, pairs: Sequence[PairRow], results: Sequence[PairResult],
                             header: dict[str, Any]) -> dict[str, str]:
    table = rows(pairs, results)
    staged = StagedOutputs(output_dir)
    try:
        write_csv(staged.path(RESULTS_CSV_FILE), table)
        write_json(staged.path(RESULTS_JSON_FILE), table, header)
        write_report(staged, output_dir, table, results, statistics(table), header)
        published = staged.move_in()
    finally:
        staged.discard()
    return {name: published[name] for name in (REPORT_FILE, RESULTS_CSV_FILE, RESULTS_JSON_FILE)}


def _outcome(results: Sequence[PairResult], outputs: dict[str, str], output_dir: Path) -> BatchOutcome:
    found = counts(result.status for result in results)
    summary = (f"{len(results)} pairs: {found[DONE]} registered, {found[SKIPPED]} skipped (finished earlier), "
               f"{found[FAILED]} failed; report in {output_dir / REPORT_FILE}")
    failed = [result for result in results if result.status == FAILED]
    if not failed:
        return BatchOutcome(ExitCode.OK, summary, outputs)
    codes = {result.exit_code for result in failed}
    return BatchOutcome(codes.pop() if len(codes) == 1 else ExitCode.ERROR,
                        f"error: {len(failed)} of {len(results)} pairs failed (the exit code and message of each are "
                        f"in {output_dir / RESULTS_CSV_FILE}; first: {failed[0].identifier}: {failed[0].message}); "
                        f"{summary}", outputs)
