"""AD-RegNet: a 3D U-Net with bidirectional cross-attention between fixed and moving at the coarse
scales, a regional attention gate on the decoder features, and fields at 1/4, 1/2 and full resolution.

Our reading of arXiv 2602.07088, whose abstract is all that is public (no code, no sizes). Confirmed:
a 3D U-Net backbone, bidirectional cross-attention between moving and fixed at several scales, a
regional adaptive attention and multi-resolution deformation synthesis. Everything else is our choice:

* **Siamese encoder** (one encoder, shared weights, applied to each image) rather than a two-channel
  input: cross-attention needs a fixed and a moving feature stream to relate, and shared weights put
  both in one feature space (and halve the encoder's parameters).
* **Cross-attention at levels 4 and 5** (1/8 and 1/16; level 1 is the input's resolution), global
  (every voxel of one image attends to every voxel of the other) with
  ``torch.nn.functional.scaled_dot_product_attention``: 13,440 and 1,680 tokens at 160x192x224, whose
  fused kernels never hold the token-by-token matrix. Global attention at 1/4 would be 107,520 tokens
  (64x the work of 1/8), hence the coarse scales only. It sits in the encoder after each of those
  levels' conv blocks, so the coarser level and the decoder's skip both see attended features.
* **Bidirectional, one set of weights**: fixed queries attend to moving keys/values and moving
  queries to fixed ones with the same projections (finding one's counterpart in the other image is
  a symmetric relation; the decoder's fixed/moving channels break the symmetry). Pre-norm, residual,
  then a 2x MLP, as a transformer block.
* **Position** enters queries and keys only: sinusoids of each voxel's coordinates on its level's grid
  (wavelengths 4, 8, 16, 32 voxels per axis, a learned linear map to the width). Their dot products
  depend on relative offsets, so attention can prefer nearby counterparts; padding at the far end
  leaves every voxel's code unchanged. Values carry content only.
* **Regional attention gate**: one sigmoid per voxel, g = sigmoid(1x1(LeakyReLU(3x3x3 conv))) of the
  fused decoder features; its 3^3 receptive field (of the level's grid) makes it regional. The
  decoder features are multiplied by g before the flow head and before they go to the finer level:
  g near 0 means that level leaves the field as it came there. One channel, so the map is the gate
  itself (no reduction). It acts at the field levels 1, 2, 3; the maps ``level{l}_regional_gate``.
* **Multi-resolution synthesis**: a zero-initialised 3x3x3 flow head at levels 3, 2, 1 (1/4, 1/2, full).
  The field so far is upsampled with ``resize_field`` (voxel units rescaled), the moving features are
  warped by it, and the level's residual r is composed as ``compose(field, r)``: r acts first, in
  fixed space, as moving(p + r(p) + field(p + r(p))) is what aligns with fixed(p) once the moving
  features were warped by ``field``. Levels 5 and 4 fuse features only (no field: where ``register``
  runs the network, at about 3 mm, a voxel at 1/8 is 24 mm, more than the deformations it is trained
  on, up to 18 mm). ``diffeomorphic`` integrates every residual (scaling and squaring).
* **Decoder fusion** per level: a conv block on [fixed, warped moving, upsampled coarser decoder].
* **Full-resolution encoder level is one conv** (not two): at full resolution every conv costs about
  as much as all coarser levels together, and edges need no more; the coarser levels give context.

Default size: channels (8, 16, 16, 20, 24), 2 heads per attention level: 251,440 parameters
(``shmoareg``'s shipped config 251,864, ``unet``'s 263,067). One forward pass at 160x192x224 on this
project's 2-core CPU (AMD EPYC, one torch thread, no_grad, other work running): 19 s and 4.0 GB peak
resident memory (the shipped ``shmoareg`` 35 s / 4.1 GB, ``unet`` 12 s / 2.6 GB, same conditions);
the full-resolution fusion block is a fifth of it, the attention at 1/8 a tenth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from shmoareg.models.base import MapSpec, ModelOutput, RegistrationNetwork
from shmoareg.models.layers import ConvBlock, warp_and_fuse, zero_init_flow
from shmoareg.spatial import compose, integrate_velocity

POSITION_WAVELENGTHS = (4.0, 8.0, 16.0, 32.0)  # voxels of the attention level's grid


@dataclass(frozen=True)
class ADRegNetConfig:
    """Sizes of the network. ``channels[i]`` is the width of level ``i + 1`` (level 1: the input's grid).

    ``attention_levels``: where fixed and moving cross-attend (global, so keep them coarse);
    ``field_levels``: where a regional gate and a flow head act (fields composed coarse to fine);
    ``heads``: attention heads per attention level (each ``width // heads`` wide).
    """

    channels: tuple[int, ...] = (8, 16, 16, 20, 24)
    attention_levels: tuple[int, ...] = (4, 5)
    field_levels: tuple[int, ...] = (1, 2, 3)
    heads: int = 2
    diffeomorphic: bool = False
    integration_steps: int = 5

    def __post_init__(self) -> None:
        levels = len(self.channels)
        if levels < 2 or any(width < 1 for width in self.channels):
            raise ValueError("channels must list at least two positive widths")
        if any(not 1 < level <= levels for level in self.attention_levels):
            raise ValueError(f"attention_levels must lie in 2..{levels}")
        if 1 not in self.field_levels or any(not 1 <= level <= levels for level in self.field_levels):
            raise ValueError(f"field_levels must lie in 1..{levels} and include 1 (the output's resolution)")
        for name in ("attention_levels", "field_levels"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat a level")
        if self.heads < 1 or any(self.channels[level - 1] % self.heads for level in self.attention_levels):
            raise ValueError("heads must be positive and divide the width of every attention level")
        if self.integration_steps < 0:
            raise ValueError("integration_steps must be non-negative")


def position_code(shape: tuple[int, int, int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoids of each voxel's (x, y, z) index, ``(Z*Y*X, 3 * 2 * len(POSITION_WAVELENGTHS))``."""
    z, y, x = (torch.arange(n, device=device, dtype=dtype) for n in shape)
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    coordinates = torch.stack((xx, yy, zz), dim=-1).reshape(-1, 3, 1)
    frequencies = torch.tensor([2 * math.pi / w for w in POSITION_WAVELENGTHS], device=device, dtype=dtype)
    angles = (coordinates * frequencies).reshape(coordinates.shape[0], -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class BidirectionalCrossAttention(nn.Module):
    """Fixed tokens attend to moving ones and moving to fixed, with one set of weights (pre-norm,
    residual, then an MLP), on every voxel of the level (global attention)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.position = nn.Linear(3 * 2 * len(POSITION_WAVELENGTHS), dim, bias=False)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def attend(self, queries: torch.Tensor, keys: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """Attention of normalised ``queries`` tokens ``(B, T, C)`` to normalised ``keys`` tokens (their
        values too), before the residual: ``out(softmax(q k^T / sqrt(d)) v)`` per head."""
        b, t, c = queries.shape

        def split(tokens: torch.Tensor) -> torch.Tensor:
            return tokens.view(b, -1, self.heads, c // self.heads).transpose(1, 2)

        q = split(self.query(queries + position))
        k = split(self.key(keys + position))
        v = split(self.value(keys))
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.out(attended.transpose(1, 2).reshape(b, t, c))

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both streams ``(B, C, Z, Y, X)`` after attending to each other."""
        b, c, *shape = fixed.shape
        position = self.position(position_code(tuple(shape), fixed.device, fixed.dtype))
        tokens_fixed, tokens_moving = (volume.flatten(2).transpose(1, 2) for volume in (fixed, moving))
        normed_fixed, normed_moving = self.norm(tokens_fixed), self.norm(tokens_moving)
        results = []
        for tokens, queries, keys in ((tokens_fixed, normed_fixed, normed_moving),
                                      (tokens_moving, normed_moving, normed_fixed)):
            tokens = tokens + self.attend(queries, keys, position)
            tokens = tokens + self.mlp(self.norm_mlp(tokens))
            results.append(tokens.transpose(1, 2).reshape(b, c, *shape))
        return results[0], results[1]


class RegionalGate(nn.Module):
    """A per-voxel sigmoid gate ``(B, 1, Z, Y, X)`` from a 3x3x3 neighbourhood of the features."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = max(2, dim // 2)
        self.layers = nn.Sequential(nn.Conv3d(dim, hidden, 3, padding=1), nn.LeakyReLU(0.2),
                                    nn.Conv3d(hidden, 1, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.layers(features))


class ADRegNet(RegistrationNetwork):
    """AD-RegNet (see the module docstring for the architecture and the choices behind it)."""

    name = "adregnet"
    Config = ADRegNetConfig

    def __init__(self, config: Optional[ADRegNetConfig] = None) -> None:
        super().__init__(config)
        widths = self.config.channels
        full_resolution = nn.Sequential(nn.Conv3d(1, widths[0], 3, padding=1),
                                        nn.InstanceNorm3d(widths[0], affine=True), nn.LeakyReLU(0.2))
        self.encoder = nn.ModuleList(
            [full_resolution] + [ConvBlock(widths[i - 1], widths[i], stride=2) for i in range(1, len(widths))])
        self.attention = nn.ModuleDict({str(level): BidirectionalCrossAttention(widths[level - 1], self.config.heads)
                                        for level in sorted(self.config.attention_levels)})
        self.fuse = nn.ModuleList(
            [ConvBlock(2 * widths[i] + (widths[i + 1] if i + 1 < len(widths) else 0), widths[i])
             for i in range(len(widths))])
        self.gates = nn.ModuleDict({str(level): RegionalGate(widths[level - 1]) for level in self.field_levels()})
        self.heads = nn.ModuleDict({str(level): zero_init_flow(nn.Conv3d(widths[level - 1], 3, 3, padding=1))
                                    for level in self.field_levels()})

    def size_multiple(self) -> int:
        """Each level below the first halves the grid."""
        return 2 ** (len(self.config.channels) - 1)

    def field_levels(self) -> list[int]:
        """The levels with a regional gate and a flow head, coarsest first."""
        return sorted(self.config.field_levels, reverse=True)

    def map_specs(self) -> list[MapSpec]:
        """The regional attention gate of every field level."""
        return [MapSpec(gate_map_name(level), "scalar", level,
                        f"decoder level {level}: regional attention gate (0: this level leaves the field "
                        f"as it came, 1: its features pass fully)")
                for level in self.field_levels()]

    def encode(self, fixed: torch.Tensor, moving: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed and moving features per level (index 0: level 1), cross-attended at the attention levels."""
        batch = fixed.shape[0]
        features = torch.cat([fixed, moving], dim=0)
        pyramid = []
        for index, block in enumerate(self.encoder):
            features = block(features)
            level = str(index + 1)
            if level in self.attention:
                features = torch.cat(self.attention[level](features[:batch], features[batch:]), dim=0)
            pyramid.append((features[:batch], features[batch:]))
        return pyramid

    def predict(self, fixed: torch.Tensor, moving: torch.Tensor) -> ModelOutput:
        pyramid = self.encode(fixed, moving)
        field: Optional[torch.Tensor] = None
        decoded: Optional[torch.Tensor] = None
        maps = {}
        for index in range(len(pyramid) - 1, -1, -1):
            level = index + 1
            field, decoded, _ = warp_and_fuse(self.fuse[index], *pyramid[index], field, decoded)
            if str(level) not in self.gates:
                continue
            gate = self.gates[str(level)](decoded)
            maps[gate_map_name(level)] = gate
            decoded = decoded * gate
            residual = self.heads[str(level)](decoded)
            if self.config.diffeomorphic:
                residual = integrate_velocity(residual, self.config.integration_steps)
            field = residual if field is None else compose(field, residual)
        return ModelOutput(field, maps=maps)


def gate_map_name(level: int) -> str:
    """The name of the regional attention gate map of a decoder level."""
    return f"level{level}_regional_gate"
