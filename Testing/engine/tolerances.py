"""The tolerance of a float32 comparison between two computation orders of the same result.

Two orders: a batch against single passes, a fused kernel against the formula written out, chunks
against the whole. Each float32 operation rounds to a relative 2^-24; summing in another order
(another CPU's SIMD width or kernel, another batch size) moves a result by a few to a few tens of
such roundings of the terms summed, and in a network those terms are as large as the tensor's
largest values, not as the element compared. So the tolerance is relative to the elements and,
for the elements near zero, absolute in proportion to the tensor's magnitude: a fixed absolute 1e-5
is rounding luck for values of a few voxels and says nothing of values of 1e-6.
"""

from __future__ import annotations

import torch

# 2^10 float32 epsilons (1.2e-4): some 50 times the largest difference seen between two orders on
# one CPU (19 epsilons), and far below a real defect's (an image swapped for another: 1e-2 and more).
FLOAT32_ORDER_RTOL = 2 ** 10 * torch.finfo(torch.float32).eps


def agree_up_to_float32_rounding(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether ``actual`` is ``expected`` computed in another order: ``torch.allclose`` with ``rtol``
    ``FLOAT32_ORDER_RTOL`` and ``atol`` ``FLOAT32_ORDER_RTOL`` times the largest magnitude of ``expected``."""
    magnitude = float(expected.detach().abs().max())
    return torch.allclose(actual, expected, rtol=FLOAT32_ORDER_RTOL, atol=FLOAT32_ORDER_RTOL * magnitude)
