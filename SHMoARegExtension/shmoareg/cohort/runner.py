"""Many pairs as one job: dealt over torchrun's ranks, a failing pair kept as a result, results collected on rank 0.

Shared by ``batch`` and ``evaluate``. Each rank registers its share of the pairs (round-robin,
:func:`~shmoareg.training.distributed.shard`) in its own process with :func:`shmoareg.pipeline.register`,
on GPU ``LOCAL_RANK`` or, on CPU, with its share of the node's cores. A pair that fails becomes a
result with its exit code and one-line message (:func:`~shmoareg.failures.describe_failure`); the
others go on. A cancel (SIGINT, SIGTERM) stops the job.

The ranks hand their results to rank 0 through the gloo process group that torchrun's variables
set up (``all_gather``). That is also the barrier: rank 0 goes on when the slowest rank is done.
Shares can differ by hours (pair sizes differ), so the collective waits up to
:data:`COLLECT_TIMEOUT` instead of torch's 30 minutes; a rank that dies ends the job through
torchrun, which stops the others.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from shmoareg.checkpoints import resolve_model
from shmoareg.devices import reset_host_peak_memory, resolve_device
from shmoareg.errors import Cancelled
from shmoareg.failures import describe_failure
from shmoareg.pipeline import RegistrationRequest, register
from shmoareg.progress import Progress
from shmoareg.protocol import COMPLETION_MARKER, ExitCode
from shmoareg.training.distributed import cpu_share, distributed, shard

COLLECT_TIMEOUT = timedelta(days=7)
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
PAIRS_STAGE = "pairs"


@dataclass(frozen=True)
class PairJob:
    """A pair to register: its id (unique in the job) and the request (whose output folder is the pair's)."""

    identifier: str
    request: RegistrationRequest


@dataclass
class PairResult:
    """What became of a pair: ``done`` (registered now), ``skipped`` (finished by an earlier run) or ``failed``."""

    identifier: str
    status: str
    rank: int
    exit_code: int = ExitCode.OK
    message: str = ""
    summary: Optional[dict] = None
    notes: list[str] = field(default_factory=list)


# Called on the pair's rank once its result is known (e.g. to draw an overview); it may add notes to the result.
AfterPair = Callable[[PairJob, PairResult], None]


def _finished_summary(folder: Path) -> Optional[dict]:
    """The summary of the complete run in ``folder`` (None when there is none, or it does not parse)."""
    try:
        summary = json.loads((folder / COMPLETION_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def run_pairs(jobs: Sequence[PairJob], *, device: str, resume: bool, progress: Progress,
              after: Optional[AfterPair] = None, progress_weight: float = 1.0) -> Optional[list[PairResult]]:
    """Register this rank's share of ``jobs``; returns every pair's result in the order of ``jobs`` on rank 0 and
    None on the other ranks.

    With ``resume`` a pair whose output folder holds a finished run is skipped. A bad device or model fails
    here, before any pair runs. Only rank 0 reports progress (over its own share: the shares differ by at
    most one pair), as the stage ``pairs`` worth ``progress_weight`` of the whole run.
    """
    for model in sorted({job.request.model for job in jobs} - {"none"}):
        resolve_model(model)
    with distributed(resolve_device(device), backend="gloo", timeout=COLLECT_TIMEOUT) as context:
        if context.active and context.device.type == "cpu":
            torch.set_num_threads(cpu_share())
        mine = shard(jobs, context.rank, context.world_size)
        reporter = progress if context.is_main else Progress("none")
        where = f" on rank 0 of {context.world_size}" if context.active else ""
        results = []
        with reporter.stage(PAIRS_STAGE, f"{len(jobs)} pairs", weight=progress_weight):
            for count, job in enumerate(mine, 1):
                results.append(_run_pair(job, resume, context.rank))
                if after is not None:
                    after(job, results[-1])
                reporter.update(count / len(mine), f"{job.identifier} {results[-1].status} ({count} of "
                                                   f"{len(mine)}{where})")
        gathered = context.gather(results)
    if not context.is_main:
        return None
    return _in_job_order(jobs, [result for part in gathered for result in part])


def _run_pair(job: PairJob, resume: bool, rank: int) -> PairResult:
    summary = _finished_summary(job.request.output_dir) if resume else None
    if summary is not None:
        return PairResult(job.identifier, SKIPPED, rank, summary=summary)
    reset_host_peak_memory()  # so that the summary's peak is this pair's, not the largest pair's so far
    try:
        summary = register(job.request)
    except Cancelled:
        raise
    except Exception as error:  # noqa: BLE001 - a failing pair is a result; the other pairs go on
        code, message = describe_failure(error)
        return PairResult(job.identifier, FAILED, rank, exit_code=int(code), message=message)
    return PairResult(job.identifier, DONE, rank, summary=summary)


def _in_job_order(jobs: Sequence[PairJob], results: list[PairResult]) -> list[PairResult]:
    """The results in the order of the jobs; every job must have exactly one (one registration per pair)."""
    by_id: dict[str, PairResult] = {}
    for result in results:
        if result.identifier in by_id:
            raise RuntimeError(f"pair {result.identifier} was registered by ranks {by_id[result.identifier].rank} "
                               f"and {result.rank}")
        by_id[result.identifier] = result
    missing = [job.identifier for job in jobs if job.identifier not in by_id]
    if missing:
        raise RuntimeError(f"no rank registered the pairs {', '.join(missing)}")
    return [by_id[job.identifier] for job in jobs]
