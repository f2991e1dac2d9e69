"""How much of the final deformation a network's prediction accounts for.

``register`` refines the network's field on the pair, so the routing maps (those of the
prediction) explain the final result only as far as the prediction does. The network share is

    clip(1 - sum |u_final - u_net|^2 / sum |u_final|^2, 0, 1)

with ``u`` the displacement beyond the affine, in millimetres, summed over the fixed image's
foreground on the working grid: 1 when refinement left the prediction as it was, 0 when the
prediction explains none of the final field (or the refinement moved it further from the final
field than zero would be).
"""

from __future__ import annotations

import numpy as np
import torch

from shmoareg.grid import Grid


def network_share(final: torch.Tensor, network: torch.Tensor, grid: Grid, foreground: np.ndarray) -> float:
    """The share in [0, 1] of ``final`` that ``network`` accounts for, over ``foreground``.

    ``final`` and ``network`` are voxel displacements ``(1, 3, Z, Y, X)`` on ``grid`` and
    ``foreground`` a ``(Z, Y, X)`` mask on it. A final field that is zero over the foreground
    (nothing to explain, an empty mask included) gives 1.0 when the network's field is zero
    there too and 0.0 otherwise, the limits of the formula.
    """
    # A grid's direction is a rotation, which keeps lengths: |u| in mm is |u_voxel * spacing| (torch, no copy of the
    # fields in physical coordinates; a tenth of the time on a 1 mm head's working grid).
    inside = torch.from_numpy(np.ascontiguousarray(np.asarray(foreground) > 0)).to(final.device)
    scale = torch.tensor(grid.spacing, dtype=torch.float64, device=final.device).view(3, 1)
    final_mm = final[0].double()[:, inside] * scale
    residual = float(torch.square(final_mm - network[0].double()[:, inside] * scale).sum())
    total = float(torch.square(final_mm).sum())
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return float(np.clip(1.0 - residual / total, 0.0, 1.0))
