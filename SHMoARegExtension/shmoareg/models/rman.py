"""RMAn: a recursive Siamese residual encoder-decoder with mutual attention (our reading of arXiv 2206.01863).

The paper gives no code. Confirmed: a Siamese encoder-decoder (four residual down blocks per
branch, residual up blocks, two mutual-attention modules linking the branches) applied recursively
K times; K = 3 suffices. Recursion ``k`` warps the moving image by the field so far, the network
predicts a residual ``r_k`` on the pair (fixed, warped moving), and the field becomes
``compose(field, r_k)``: ``u(p) = r_k(p) + field(p + r_k(p))``, the residual acting first in fixed
space, as ``moving(p + r_k(p) + field(p + r_k(p))) ~ fixed(p)`` requires. (``compose(r_k, field)``
would apply the residual in moving space, where it was not estimated.)

Choices the paper leaves open (and why):

* **One network, shared across recursions.** The state dict does not depend on K, so a model
  trained with K = 3 runs with any ``recursions`` (build it with another K, load the same weights).
* **The moving image, not its features, is warped**, always from the original by the whole field
  (one interpolation, no blur accumulating over recursions).
* **One decoder on both branches.** Each residual up block upsamples the coarser decoder features
  and fuses them with both branches' skips by a 1x1 convolution, then a residual block. A
  decoder per branch would double the full-resolution cost, and the flow needs both branches.
  The coarsest level's two branches are fused by a 1x1 convolution (the bottleneck).
* **The fixed branch below the first attention level is encoded once** and reused by every
  recursion when no gradients are needed: it does not depend on the moving image, so this is the
  same network at lower cost (in training both branches run as one batch: faster on CPU).
* **Mutual attention = two-way global cross-attention** at ``attention_levels`` (default the two
  coarsest, 1/8 and 1/16): fixed tokens query the (warped) moving tokens and moving tokens the
  fixed ones, with one set of weights for both directions (Siamese), pre-norm, a residual add and
  a depthwise 3x3x3 convolution as position encoding; no feed-forward layer (the residual blocks
  after it are the nonlinearity). Global, not windowed: the paper's point is a receptive field
  beyond the convolutions'; at 160x192x224 it is 13,440 tokens at 1/8, which fused attention
  (``scaled_dot_product_attention``) handles without an N x N matrix (the entropy map is computed
  in chunks of queries for the same reason).
* **Blocks**: residual blocks of two 3x3x3 convolutions with instance norm and LeakyReLU(0.2)
  (as the project's other networks); a down block strides the first convolution and its shortcut
  is 2x average pooling and a 1x1 convolution. The flow head is a 3x3x3 convolution at full
  resolution, initialised near zero so an untrained network barely moves anything.
* **Optional diffeomorphic mode**: each residual is a velocity integrated by scaling and squaring.
* **Maps**: a residual length per recursion shows where each recursion still moved tissue; the
  entropy is that of the last recursion (the one that shaped the final field), fixed to moving
  (a fixed voxel's search over the moving image), one map per attention level.

Maps: ``recursion{k}_residual_magnitude`` (the length of recursion k's residual, in voxels of the
network's input grid at level 1: the network does not know the spacing; the map writer converts
to mm) and ``level{l}_attention_entropy`` per attention level (nats, per fixed voxel of that level:
the entropy of its attention over the warped moving voxels in the last recursion, averaged over
heads; 0 = one voxel, log N = all N voxels of the level alike).

Default config: channels 8/16/28/28/28 (levels 1-5: four down blocks), mutual attention at levels
4 and 5 with 2 heads of 16, K = 3: 251,307 parameters (``shmoareg`` as shipped 251,864, ``unet``
263,067; the widths were picked to match). A forward pass at 160x192x224 without gradients took
38-45 s on one CPU thread and 31.5 s on two (a shared 2-core machine), 3.2 GB peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from shmoareg.models.base import MapSpec, ModelOutput, RegistrationNetwork
from shmoareg.models.layers import upsample_to, zero_init_flow
from shmoareg.spatial import compose, integrate_velocity, warp

# Entropy is computed over query chunks: at most this many attention scores at once.
_ENTROPY_CHUNK_SCORES = 1 << 23


@dataclass(frozen=True)
class RMAnConfig:
    """Sizes of the network. ``channels[i]`` is the width of level ``i + 1`` (level 1: the input's
    resolution, level ``L``: ``2^(L-1)`` coarser); ``attention_levels`` carry mutual attention of
    ``heads`` heads of ``head_dim``; ``recursions`` is K."""

    channels: tuple[int, ...] = (8, 16, 28, 28, 28)
    attention_levels: tuple[int, ...] = (4, 5)
    heads: int = 2
    head_dim: int = 16
    recursions: int = 3
    diffeomorphic: bool = False
    integration_steps: int = 5

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or any(width < 1 for width in self.channels):
            raise ValueError("channels must list at least two positive widths")
        if any(not 2 <= level <= len(self.channels) for level in self.attention_levels):
            raise ValueError(f"attention_levels must lie in 2..{len(self.channels)} (level 1 is full resolution)")
        if len(set(self.attention_levels)) != len(self.attention_levels):
            raise ValueError("attention_levels must not repeat a level")
        if self.heads < 1 or self.head_dim < 1:
            raise ValueError("heads and head_dim must be positive")
        if self.recursions < 1:
            raise ValueError(f"recursions must be at least 1, not {self.recursions}")
        if self.integration_steps < 0:
            raise ValueError("integration_steps must be non-negative")


class ResidualBlock(nn.Module):
    """Two 3x3x3 convolutions with instance norm and LeakyReLU plus a shortcut; may stride by 2."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(0.2),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
            nn.InstanceNorm3d(out_channels, affine=True),
        )
        shortcut: list[nn.Module] = [nn.AvgPool3d(2)] if stride == 2 else []
        if in_channels != out_channels:
            shortcut.append(nn.Conv3d(in_channels, out_channels, 1))
        self.shortcut = nn.Sequential(*shortcut)
        self.activation = nn.LeakyReLU(0.2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(features) + self.shortcut(features))


class UpBlock(nn.Module):
    """Upsample the coarser decoder features, fuse them with both branches' skips (1x1), residual block.

    The 1x1 fusion's part on the coarser features runs before the upsampling (trilinear upsampling
    commutes with a 1x1 convolution), so only ``out_channels`` are upsampled.
    """

    def __init__(self, coarser: int, skips: int, out_channels: int) -> None:
        super().__init__()
        self.project = nn.Conv3d(coarser, out_channels, 1)
        self.skip = nn.Conv3d(skips, out_channels, 1, bias=False)
        self.block = ResidualBlock(out_channels, out_channels)

    def forward(self, coarser: torch.Tensor, skips: torch.Tensor) -> torch.Tensor:
        upsampled = upsample_to(self.project(coarser), tuple(skips.shape[2:]))
        return self.block(upsampled + self.skip(skips))


class MutualAttention(nn.Module):
    """Two-way cross-attention between the fixed and moving halves of a batch (one set of weights).

    Input ``(2B, C, Z, Y, X)``: the first B are fixed features, the last B moving ones. Each half's
    tokens query the other half's; the result is added to the input.
    """

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.position = nn.Conv3d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, inner)
        self.key = nn.Linear(dim, inner)
        self.value = nn.Linear(dim, inner)
        self.out = nn.Linear(inner, dim)

    def _heads(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.view(tokens.shape[0], tokens.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def queries_and_keys(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values ``(2B, heads, N, head_dim)``: each half's keys are the other half's."""
        tokens = self.norm((features + self.position(features)).flatten(2).transpose(1, 2))
        half = tokens.shape[0] // 2
        other = torch.cat([tokens[half:], tokens[:half]])
        return self._heads(self.query(tokens)), self._heads(self.key(other)), self._heads(self.value(other))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The attended features, and the fixed half's queries and keys (for the entropy map)."""
        query, key, value = self.queries_and_keys(features)
        attended = F.scaled_dot_product_attention(query, key, value)
        attended = self.out(attended.transpose(1, 2).reshape(features.shape[0], -1, self.heads * self.head_dim))
        half = features.shape[0] // 2
        return features + attended.transpose(1, 2).reshape(features.shape), query[:half], key[:half]


def attention_entropy(query: torch.Tensor, key: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Per query token, the entropy (nats) of its softmax attention over the keys, mean over heads.

    ``query``, ``key``: ``(B, heads, N, D)``, the scale of ``scaled_dot_product_attention``. Returns
    ``(B, 1, *shape)``. Computed in chunks of queries so no N x N matrix is ever held whole.
    """
    batch, heads, tokens, dim = query.shape
    chunk = max(1, _ENTROPY_CHUNK_SCORES // max(1, batch * heads * key.shape[2]))
    pieces = []
    with torch.no_grad():
        for start in range(0, tokens, chunk):
            scores = query[:, :, start:start + chunk] @ key.transpose(-1, -2) / math.sqrt(dim)
            log_p = torch.log_softmax(scores.float(), dim=-1)
            pieces.append(-(log_p.exp() * log_p).sum(dim=-1).mean(dim=1))
    return torch.cat(pieces, dim=1).view(batch, 1, *shape)


class RMAnNet(RegistrationNetwork):
    """The RMAn registration network (see the module docstring)."""

    name = "rman"
    Config = RMAnConfig

    def __init__(self, config: Optional[RMAnConfig] = None) -> None:
        super().__init__(config)
        widths = self.config.channels
        self.encoder = nn.ModuleList(
            [ResidualBlock(1, widths[0])] + [ResidualBlock(widths[i - 1], widths[i], stride=2)
                                             for i in range(1, len(widths))])
        self.attention = nn.ModuleDict({
            str(level): MutualAttention(widths[level - 1], self.config.heads, self.config.head_dim)
            for level in self.config.attention_levels})
        self.bottleneck = nn.Conv3d(2 * widths[-1], widths[-1], 1)
        self.decoder = nn.ModuleList([UpBlock(widths[i + 1], 2 * widths[i], widths[i])
                                      for i in range(len(widths) - 1)])
        self.flow = zero_init_flow(nn.Conv3d(widths[0], 3, 3, padding=1))

    @property
    def levels(self) -> int:
        return len(self.config.channels)

    def size_multiple(self) -> int:
        """The coarsest level's factor: each down block halves the grid."""
        return 2 ** (self.levels - 1)

    def map_specs(self) -> list[MapSpec]:
        """Each recursion's residual length (level 1) and the attention entropy per attention level."""
        specs = [MapSpec(residual_map_name(k), "scalar", 1,
                         f"recursion {k} of {self.config.recursions}: length of the residual displacement it "
                         "added, in voxels of the network's input grid (the network does not know the spacing)",
                         units="voxels")
                 for k in range(1, self.config.recursions + 1)]
        specs += [MapSpec(entropy_map_name(level), "scalar", level,
                          f"level {level} mutual attention, last recursion: entropy of each fixed voxel's attention "
                          "over the warped moving image's voxels of that level, mean over heads (0: one voxel; "
                          "log N: all N alike)", units="nats")
                  for level in sorted(self.config.attention_levels)]
        return specs

    def _encode_invariant(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Features of levels 1 .. first attention level (before its attention): one branch alone."""
        stop = min(self.config.attention_levels, default=self.levels)
        features, pyramid = image, []
        for block in self.encoder[:stop]:
            features = block(features)
            pyramid.append(features)
        return pyramid

    def _residual(self, fixed: torch.Tensor, fixed_pyramid: Optional[list[torch.Tensor]], warped: torch.Tensor,
                  entropies: Optional[dict[int, torch.Tensor]]) -> torch.Tensor:
        """One pass of the network on (fixed, warped moving): the residual field, in voxels.

        ``fixed_pyramid``: the fixed branch's invariant features, or None to encode both branches as
        one batch. The attention entropy per attention level goes to ``entropies`` when given.
        """
        batch = warped.shape[0]
        if fixed_pyramid is None:
            both = self._encode_invariant(torch.cat([fixed, warped]))
            fixed_pyramid, moving_pyramid = [f[:batch] for f in both], [f[batch:] for f in both]
        else:
            moving_pyramid = self._encode_invariant(warped)
        # Both branches' features per level: concatenated along channels below the first attention
        # level (the decoder's skips), along the batch from there on (attention, down blocks).
        skips = [torch.cat(pair, dim=1) for pair in zip(fixed_pyramid[:-1], moving_pyramid[:-1])]
        features = torch.cat([fixed_pyramid[-1], moving_pyramid[-1]])
        for level in range(len(fixed_pyramid), self.levels + 1):
            if level > len(fixed_pyramid):
                features = self.encoder[level - 1](features)
            if str(level) in self.attention:
                features, query, key = self.attention[str(level)](features)
                if entropies is not None:
                    entropies[level] = attention_entropy(query, key, tuple(features.shape[2:]))
            skips.append(torch.cat([features[:batch], features[batch:]], dim=1))
        decoded = self.bottleneck(skips[-1])
        for index in range(self.levels - 2, -1, -1):
            decoded = self.decoder[index](decoded, skips[index])
        residual = self.flow(decoded)
        if self.config.diffeomorphic:
            residual = integrate_velocity(residual, self.config.integration_steps)
        return residual

    def predict(self, fixed: torch.Tensor, moving: torch.Tensor) -> ModelOutput:
        # Without gradients the fixed branch is encoded once; with them (training) both branches run as
        # one batch per recursion, as CPU convolutions take oneDNN's kernel for a batch of 2 but not
        # for one small volume of few channels (a 48^3 training step was 3x slower).
        fixed_pyramid = None if torch.is_grad_enabled() else self._encode_invariant(fixed)
        field: Optional[torch.Tensor] = None
        maps: dict[str, torch.Tensor] = {}
        entropies: dict[int, torch.Tensor] = {}
        for k in range(1, self.config.recursions + 1):
            warped = moving if field is None else warp(moving, field)
            last = k == self.config.recursions
            residual = self._residual(fixed, fixed_pyramid, warped, entropies if last else None)
            maps[residual_map_name(k)] = residual.detach().square().sum(dim=1, keepdim=True).sqrt()
            field = residual if field is None else compose(field, residual)
        maps.update({entropy_map_name(level): values for level, values in entropies.items()})
        return ModelOutput(field, maps=maps)


def residual_map_name(recursion: int) -> str:
    """The name of the residual-length map of recursion ``recursion`` (1-based)."""
    return f"recursion{recursion}_residual_magnitude"


def entropy_map_name(level: int) -> str:
    """The name of the attention-entropy map of an attention level."""
    return f"level{level}_attention_entropy"
