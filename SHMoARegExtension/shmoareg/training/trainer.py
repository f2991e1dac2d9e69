"""The training loop: one process, or one rank of a DistributedDataParallel run under ``torchrun``.

Output folder: ``config.yaml`` (the resolved config), ``metrics.jsonl`` (train and validation
records), ``tensorboard/`` when available, and ``checkpoints/``: ``step_NNNNNN``, ``latest`` (with
its training state, for ``--resume``) and ``best`` (highest validation Dice, or lowest validation
loss without labels). Only rank 0 writes. The random state is reseeded every step from
``(seed, rank, step)``, so a resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import yaml
from torch.nn.parallel import DistributedDataParallel

from shmoareg.checkpoints import (describe_hardware, load_checkpoint, load_training_state, resolve_model,
                                  save_checkpoint)
from shmoareg.devices import resolve_device
from shmoareg.ensemble import SwapEnsemble
from shmoareg.errors import InputError
from shmoareg.models.registry import build_model, model_config
from shmoareg.training.config import TrainingConfig
from shmoareg.training.data import Prefetcher, Sample, TrainingData, derive_seed
from shmoareg.training.distributed import DistributedContext, distributed
from shmoareg.training.logs import METRICS_FILE, MetricsLog
from shmoareg.training.objective import Objective
from shmoareg.training.validation import validate

CHECKPOINT_DIR = "checkpoints"
LATEST, BEST = "latest", "best"
_NOISE_STREAM = 3


@dataclass
class TrainingResult:
    """What a run did on this rank: the final step, this rank's training losses, the validations (rank 0)."""

    step: int
    model: nn.Module
    output_dir: Path
    losses: list[float] = field(default_factory=list)
    validations: list[dict[str, float]] = field(default_factory=list)


def _session(step: int, device: torch.device, world_size: int) -> dict[str, Any]:
    """A new training session's record: where it starts and on what hardware."""
    hardware = describe_hardware(device)
    return {"from_step": step, "to_step": step, "seconds": 0.0,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "world_size": world_size,
            "device": hardware.get("gpu") or f"cpu ({hardware.get('cpu_count')} cores, "
                                              f"{torch.get_num_threads()} threads)"}


def _earlier_session(metadata: dict[str, Any]) -> dict[str, Any]:
    """The training a checkpoint written before histories went through, as one session."""
    hardware = metadata.get("hardware") or {}
    return {"from_step": 0, "to_step": int(metadata["step"]), "seconds": metadata.get("seconds"),
            "started": None, "world_size": hardware.get("world_size", 1),
            "device": hardware.get("gpu") or f"cpu ({hardware.get('cpu_count')} cores)",
            "note": "recorded before training histories were kept; final validation Dice "
                    f"{(metadata.get('metrics') or {}).get('validation', {}).get('dice')} on that run's own pairs"}


def train(config: TrainingConfig, *, resume: bool = False, log: Callable[[str], None] = print) -> TrainingResult:
    """Train as ``config`` says (continuing ``output_dir``'s latest checkpoint when ``resume``)."""
    with distributed(resolve_device(config.device)) as context:
        trainer = _Trainer(config, context, log)
        try:
            return trainer.run(resume)
        finally:
            trainer.prefetcher.close()


def _autocast_dtype(config: TrainingConfig, device: torch.device) -> Optional[torch.dtype]:
    if not config.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class _Trainer:
    def __init__(self, config: TrainingConfig, context: DistributedContext, log: Callable[[str], None]) -> None:
        self.config, self.context = config, context
        self.device = context.device
        self.log = log if context.is_main else (lambda message: None)
        self.output_dir = Path(config.output_dir)
        self.checkpoints = self.output_dir / CHECKPOINT_DIR
        torch.manual_seed(config.seed)  # the same initial weights on every rank
        self.model = build_model(config.model.name, config.model.config).to(self.device)
        # What the loss and the validation see: the network, or its swap ensemble (the same weights).
        self.trained: nn.Module = SwapEnsemble(self.model) if config.swap_ensemble else self.model
        self.optimiser = torch.optim.AdamW(self.model.parameters(), lr=config.optimiser.lr,
                                           weight_decay=config.optimiser.weight_decay)
        self.amp_dtype = _autocast_dtype(config, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.objective = Objective(config.loss)
        self.data = TrainingData(config.data, config.seed, context.rank, context.world_size, self.device)
        self.prefetcher = Prefetcher(self.data, config.optimiser.batch_size)
        self.seconds_before = 0.0
        self.best: Optional[float] = None
        # The sessions and validation curve of the weights' whole life, carried from checkpoint to checkpoint.
        self.history: dict[str, list] = {"sessions": [], "validation": []}
        if config.amp and self.amp_dtype is None:
            self.log("amp is for CUDA only: training in float32 on this device")

    # -- checkpoints -------------------------------------------------------------------------
    def _check_same_model(self, path: Path, loaded: nn.Module) -> None:
        """``loaded`` (as its config reads with today's defaults) must be the model being trained."""
        wanted = {"name": self.model.name, "config": model_config(self.model)}
        found = {"name": loaded.name, "config": model_config(loaded)}
        if wanted != found:
            raise InputError(f"cannot continue from {path}: it holds model {found['name']!r} with config "
                             f"{found['config']} but the training config asks for {wanted['name']!r} with "
                             f"{wanted['config']}")

    def _adopt(self, loaded: nn.Module, metadata: dict[str, Any]) -> int:
        """Take over a checkpoint's weights (grown into a wider form of it: ``RegistrationNetwork.grow_from``),
        time and history; returns its step."""
        if self.model.can_grow_from(loaded):
            self.model.grow_from(loaded)
        else:
            self.model.load_state_dict(loaded.state_dict())
        self.seconds_before = float(metadata.get("seconds") or 0.0)
        history = metadata.get("history") or {"sessions": [_earlier_session(metadata)],
                                              "validation": self._logged_validation()}
        self.history = {"sessions": list(history.get("sessions", [])),
                        "validation": list(history.get("validation", []))}
        return int(metadata["step"])

    def _logged_validation(self) -> list[dict[str, Any]]:
        """The validation curve in this run's ``metrics.jsonl`` (for checkpoints written before histories)."""
        log = self.output_dir / METRICS_FILE
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
        return [{"step": r["step"], **{key: round(r[key], 4) for key in ("dice", "loss") if key in r}}
                for r in records if r.get("phase") == "validation"]

    def _initialise(self) -> int:
        """Start from ``config.init_from`` (resume without a checkpoint yet), or from scratch."""
        source = self.config.init_from
        if source is None:
            self.log(f"no checkpoint to resume from in {self.checkpoints}; starting at step 0")
            return 0
        loaded, metadata = resolve_model(source, self.device)
        grown = self.model.can_grow_from(loaded)
        if not grown:
            self._check_same_model(Path(metadata["weights_path"]), loaded)
        self.best = None  # validation pairs of this run may differ from the source's
        step = self._adopt(loaded, metadata)
        how = " grown into this config (its new inputs start at zero weight)" if grown else ""
        self.log(f"no checkpoint in {self.checkpoints} yet: continuing {metadata['weights_path']}{how} from step "
                 f"{step} (fresh optimiser state)")
        return step

    def _restore(self, resume: bool) -> int:
        latest = self.checkpoints / f"{LATEST}.safetensors"
        if not latest.is_file():
            return self._initialise() if resume else 0
        if not resume:
            raise InputError(f"output_dir {self.output_dir} already holds a training run ({latest}); pass "
                             "--resume to continue it, or choose another output_dir")
        loaded, metadata = load_checkpoint(latest, self.device)
        self._check_same_model(latest, loaded)
        state = load_training_state(latest)
        if state is None:
            raise InputError(f"cannot resume from {latest}: its training state file (optimiser) is missing")
        step = self._adopt(loaded, metadata)
        self.optimiser.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.best = metadata["metrics"].get("best_score")
        self.log(f"resuming from {latest} at step {step}")
        return step

    def _save(self, name: str, step: int, metrics: dict[str, Any], seconds: float, with_state: bool) -> Path:
        state = None
        if with_state:
            state = {"optimizer": self.optimiser.state_dict(), "scaler": self.scaler.state_dict(), "step": step}
        world = self.context.world_size
        data = {**self.data.describe(), "pairs_seen": step * self.config.optimiser.batch_size * world}
        session = self.history["sessions"][-1]
        session.update(to_step=step, seconds=round(seconds - self.seconds_before, 1))
        return save_checkpoint(self.model, self.checkpoints / name, step=step,
                               metrics={**metrics, "best_score": self.best}, training=self.config.to_dict(),
                               data=data, seconds=round(seconds, 3), training_state=state, history=self.history)

    # -- one step and validation -------------------------------------------------------------
    def _step(self, network: nn.Module, step: int) -> tuple[dict[str, float], float]:
        torch.manual_seed(derive_seed(self.config.seed, _NOISE_STREAM, self.context.rank, step))
        sample: Sample = self.prefetcher.batch(step).to(self.device)
        amp = self.amp_dtype is not None
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=amp):
            output = network(sample.fixed, sample.moving)
        loss, terms = self.objective(output, sample)
        if not math.isfinite(terms["loss"]):
            raise InputError(f"training diverged at step {step} (loss {terms['loss']}); lower optimiser.lr, "
                             "keep optimiser.grad_clip on, or check the data")
        self.optimiser.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimiser)
        clip = self.config.optimiser.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else math.inf)
        self.scaler.step(self.optimiser)
        self.scaler.update()
        return terms, float(norm)

    def _validate(self, samples: list[Sample], step: int, metrics_log: MetricsLog, seconds: float) -> dict[str, float]:
        values = validate(self.trained, samples, self.objective, self.device)
        metrics_log.write("validation", step, values)
        self.history["validation"].append({"step": step, "hours": round(seconds / 3600, 3),
                                           **{key: round(values[key], 4) for key in ("dice", "loss") if key in values}})
        dice = values.get("dice", math.nan)
        score = dice if not math.isnan(dice) else -values["loss"]
        improved = self.best is None or score > self.best
        if improved:
            self.best = score
        self.log(f"validation at step {step}: loss {values['loss']:.4f}"
                 + (f", Dice {dice:.3f} (before {values['dice_before']:.3f})" if not math.isnan(dice) else "")
                 + (" (best so far)" if improved else ""))
        if improved:
            self._save(BEST, step, {"validation": values}, seconds, with_state=False)
        return values

    # -- the loop ----------------------------------------------------------------------------
    def run(self, resume: bool) -> TrainingResult:
        config, context = self.config, self.context
        start = self._restore(resume)
        self.history["sessions"].append(_session(start, self.device, context.world_size))
        result = TrainingResult(start, self.model, self.output_dir)
        network: nn.Module = self.trained
        if context.active:
            network = DistributedDataParallel(self.trained, device_ids=[self.device.index] if self.device.type == "cuda"
                                              else None)
        metrics_log, samples = None, []
        if context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            (self.output_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
            metrics_log = MetricsLog(self.output_dir, start, self.log)
            samples = self.data.validation(config.validation.pairs)
            self.log(f"training {config.model.name} on {self.device} x{context.world_size} from step {start} "
                     f"to {config.optimiser.steps}; outputs in {self.output_dir}")
        started = time.perf_counter()
        elapsed = lambda: self.seconds_before + time.perf_counter() - started  # noqa: E731
        fresh = not (self.checkpoints / f"{LATEST}.safetensors").is_file()
        if context.is_main and fresh:
            result.validations.append(self._validate(samples, start, metrics_log, self.seconds_before))
        validation: dict[str, float] = result.validations[-1] if result.validations else {}
        terms: dict[str, float] = {}
        window_seconds, window_steps = 0.0, 0
        for step in range(start, config.optimiser.steps):
            step_started = time.perf_counter()
            terms, grad_norm = self._step(network, step)
            window_seconds += time.perf_counter() - step_started
            result.losses.append(terms["loss"])
            done, window_steps = step + 1, window_steps + 1
            result.step = done
            if not context.is_main:
                continue
            last = done == config.optimiser.steps
            if done % config.log_every == 0 or last:
                seconds_per_step = window_seconds / window_steps
                metrics_log.write("train", done, {**terms, "grad_norm": grad_norm, "lr": config.optimiser.lr,
                                                  "seconds_per_step": seconds_per_step})
                self.log(f"step {done}/{config.optimiser.steps}: loss {terms['loss']:.4f} "
                         f"({', '.join(f'{k} {v:.4f}' for k, v in terms.items() if k != 'loss')}), "
                         f"{seconds_per_step:.2f} s/step")
                window_seconds, window_steps = 0.0, 0
            if done % config.validation.every == 0 or last:
                validation = self._validate(samples, done, metrics_log, elapsed())
                result.validations.append(validation)
            if done % config.checkpoint_every == 0 or last:
                metrics = {"train": terms, "validation": validation}
                self._save(f"step_{done:06d}", done, metrics, elapsed(), with_state=False)
                path = self._save(LATEST, done, metrics, elapsed(), with_state=True)
                self.log(f"checkpoint {path} (step {done})")
        if metrics_log is not None:
            metrics_log.close()
        return result
