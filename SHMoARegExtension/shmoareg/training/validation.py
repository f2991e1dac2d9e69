"""Validation of a network on fixed pairs: the training loss, Dice of warped labels and folding."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn

from shmoareg.metrics import dice_per_label, mean_dice
from shmoareg.spatial import jacobian_determinant, warp_labels
from shmoareg.training.data import Sample
from shmoareg.training.objective import Objective


def _dice(fixed_labels: torch.Tensor, moving_labels: torch.Tensor) -> float:
    return mean_dice(dice_per_label(fixed_labels.cpu().numpy().squeeze(), moving_labels.cpu().numpy().squeeze()))


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


@torch.no_grad()
def validate(model: nn.Module, samples: list[Sample], objective: Objective, device: torch.device) -> dict[str, float]:
    """Means over ``samples`` (one pair each) of the loss terms, ``dice`` after and ``dice_before``
    (mean Dice over the fixed labels, nan without labels), ``fraction_folding`` (share of J <= 0) and
    ``still_displacement``: the mean displacement (voxels) predicted for the fixed image against itself, over its
    foreground (where it has labels, else everywhere), a floor a field should not have.

    The model is evaluated in eval mode and left in the mode it was in.
    """
    was_training = model.training
    model.eval()
    records: dict[str, list[float]] = {}
    try:
        for sample in samples:
            sample = sample.to(device)
            output = model(sample.fixed, sample.moving)
            _, terms = objective(output, sample)
            displacement = output.displacement.float()
            terms["fraction_folding"] = float((jacobian_determinant(displacement) <= 0).float().mean())
            if sample.fixed_labels is not None and sample.moving_labels is not None:
                terms["dice"] = _dice(sample.fixed_labels, warp_labels(sample.moving_labels, displacement))
                terms["dice_before"] = _dice(sample.fixed_labels, sample.moving_labels)
            terms["still_displacement"] = still_displacement(model, sample)
            for name, value in terms.items():
                records.setdefault(name, []).append(value)
    finally:
        model.train(was_training)
    return {name: _nanmean(values) for name, values in records.items()}


def still_displacement(model: nn.Module, sample: Sample) -> float:
    """Mean displacement length (voxels) of ``model`` on ``sample.fixed`` against itself, over the fixed labels'
    foreground (everywhere without labels): what a network moves where nothing moved."""
    field = model(sample.fixed, sample.fixed).displacement.float().norm(dim=1)
    if sample.fixed_labels is None or not bool((sample.fixed_labels > 0).any()):
        return float(field.mean())
    return float(field[(sample.fixed_labels > 0)[:, 0]].mean())
