"""Training logs: JSON lines in ``metrics.jsonl`` always, TensorBoard scalars when ``tensorboard`` is installed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Optional

from shmoareg.jsonio import dumps

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def _summary_writer(folder: Path) -> Optional[Any]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


class MetricsLog:
    """Appends one JSON object per record; ``phase`` and ``step`` are in every record.

    Opening it after a resume at ``start_step`` drops records of later steps (left by a run
    that stopped after its last checkpoint).
    """

    def __init__(self, output_dir: Path, start_step: int, note: Callable[[str], None]) -> None:
        self.path = output_dir / METRICS_FILE
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        self.writer = _summary_writer(output_dir / TENSORBOARD_DIR)
        if self.writer is None:
            note(f"TensorBoard logging is off: the tensorboard package is not installed (pip install tensorboard); "
                 f"metrics are written to {self.path}")

    def write(self, phase: str, step: int, values: dict[str, Any]) -> None:
        """Log ``values`` of ``phase`` (e.g. train, validation) at ``step``."""
        record = {"phase": phase, "step": step, **values}
        with open(self.path, "a") as stream:
            stream.write(dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(f"{phase}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
