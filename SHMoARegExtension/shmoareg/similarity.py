"""Which similarity the pair optimisation uses when the user leaves it to ``auto``.

Local NCC assumes that, in each small window, the moving image's intensities are a linear
function of the fixed image's (any sign: an inverted contrast such as T1 against T2 is fine).
MIND-SSC compares local self-similarity patterns instead and holds across contrasts, but it is
slightly less accurate within one contrast (benchmarks/README.md, "Similarity across contrasts").

The rule: over the voxels where both affinely aligned images show the fixed image's foreground,
compare how much of the moving intensity's variance *any* function of the fixed intensity
explains (the correlation ratio eta^2, from a joint histogram) with how much a *linear* function
explains (the squared correlation r^2). ``linearity = r^2 / eta^2`` is near 1 for one contrast
(or an inverted one) and low when the tissue order changes (CT against MR, T1 against a contrast
with grey matter brighter than white matter). Below ``LINEARITY_THRESHOLD`` the pair is treated as
cross-contrast and MIND-SSC is used.

Failure modes: a pair so badly aligned after the affine stage that no intensity relation shows
(both statistics near zero; the rule then keeps local NCC, whose result the user should check);
two contrasts that happen to be nearly linear over the foreground (local NCC is then the right
choice anyway); a tiny foreground (fewer than ``MIN_VOXELS`` voxels: local NCC).
"""

from __future__ import annotations

from typing import Optional

import torch

LINEARITY_THRESHOLD = 0.8
HISTOGRAM_BINS = 32
MIN_VOXELS = 1000


def linearity(fixed: torch.Tensor, moving: torch.Tensor, mask: Optional[torch.Tensor] = None) -> float:
    """``r^2 / eta^2`` of the moving intensities given the fixed ones (1 when eta^2 is 0), over ``mask``."""
    keep = mask > 0.5 if mask is not None else torch.ones_like(fixed, dtype=torch.bool)
    f, m = fixed[keep].double(), moving[keep].double()
    if f.numel() < MIN_VOXELS or float(m.var()) == 0.0 or float(f.var()) == 0.0:
        return 1.0
    r = torch.corrcoef(torch.stack((f, m)))[0, 1]
    low, high = float(f.min()), float(f.max())
    bins = ((f - low) / (high - low) * HISTOGRAM_BINS).long().clamp(max=HISTOGRAM_BINS - 1)
    counts = torch.bincount(bins, minlength=HISTOGRAM_BINS).double()
    means = torch.bincount(bins, weights=m, minlength=HISTOGRAM_BINS) / counts.clamp(min=1)
    explained = float((counts * (means - m.mean()).square()).sum() / counts.sum()) / float(m.var(unbiased=False))
    return 1.0 if explained <= 0 else min(1.0, float(r * r) / explained)


def choose_similarity(fixed: torch.Tensor, moving: torch.Tensor, mask: Optional[torch.Tensor] = None) -> str:
    """``lncc`` or ``mind`` for two affinely aligned, normalised images on one grid (see the module notes)."""
    return "lncc" if linearity(fixed, moving, mask) >= LINEARITY_THRESHOLD else "mind"
