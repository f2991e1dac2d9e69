"""SHMoAReg: a Siamese encoder with Mixture-of-Attention-heads transformer blocks at the deep levels,
and a coarse-to-fine decoder whose flow head at every level is a Spatially Heterogeneous MoE.

Our reading of arXiv 2509.20073 (the paper gives no code). At decoder level ``l`` (1 = full
resolution) the moving features are warped by the field so far, a conv block fuses them with the
fixed features and the upsampled decoder features, and the SHMoE head predicts a residual field
that is composed with the field so far (the residual acts first, in fixed space). In
diffeomorphic mode every residual is a velocity integrated by scaling and squaring.

Beyond the paper (an option, off in its form): ``correlation_radius`` r > 0 hands every decoder level an
explicit local correlation of the fixed features with the warped moving features over the ``(2r + 1)^3``
offsets (:func:`~shmoareg.models.layers.local_correlation`; ``coarsest_correlation_radius`` at the coarsest
level, where the grid is small), fed to the fusion beside the features, as optical-flow and registration
pyramids (PWC-Net, PDD-Net) do: the decoder no longer has to discover matching from concatenated features.
``matching_expert`` adds the correlation's similarity-weighted read-out (softmax over the offsets' costs
times the offsets, as VFA and ModeT read a displacement out of the matching itself) to each SHMoE head as one
more expert that the per-voxel, per-axis gate can choose.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from shmoareg.models.base import AXES, MapSpec, ModelOutput, RegistrationNetwork, RoutingRecord
from shmoareg.models.layers import (ConvBlock, local_correlation, matching_displacement, pad_to_multiple,
                                    warp_and_fuse)
from shmoareg.models.mixture import MixtureOfAttentionHeads, SpatiallyHeterogeneousMoE
from shmoareg.spatial import compose, integrate_velocity, resize_field


@dataclass(frozen=True)
class SHMoARegConfig:
    """Sizes of the network. ``channels[i]`` is the width of level ``input_level + i``.

    Levels are numbered by resolution: level ``L`` is the input averaged down ``2^(L-1)``. With
    ``input_level`` 2 the first stem sees the images averaged down 2x, the finest decoder level works at half the input's
    resolution and its field is upsampled to the input: on a CPU that costs about an eighth of a
    full-resolution level (whose 3D convolutions dominate a training step). ``factorised_experts``
    picks the cheap form of the SHMoE experts (see :class:`SpatiallyHeterogeneousMoE`).
    """

    channels: tuple[int, ...] = (8, 16, 32, 32, 32)
    input_level: int = 1
    attention_levels: tuple[int, ...] = (3, 4, 5)
    window: int = 4
    head_experts: int = 4
    top_k: int = 2
    head_dim: int = 16
    router_noise: float = 1.0
    experts: tuple[tuple[int, int], ...] = ((3, 1), (5, 1), (3, 3), (3, 5))
    factorised_experts: bool = False
    diffeomorphic: bool = False
    integration_steps: int = 5
    correlation_radius: int = 0
    coarsest_correlation_radius: int = 0
    matching_expert: bool = False

    def __post_init__(self) -> None:
        if self.input_level not in (1, 2):
            raise ValueError(f"input_level must be 1 (full resolution) or 2 (half), not {self.input_level}")
        finest, coarsest = self.input_level, self.input_level + len(self.channels) - 1
        if any(not finest < level <= coarsest for level in self.attention_levels):
            raise ValueError(f"attention_levels must lie in {finest + 1}..{coarsest}")
        if self.correlation_radius < 0 or self.coarsest_correlation_radius < 0:
            raise ValueError("correlation radii must be 0 (no correlation) or positive")
        if self.matching_expert and not self.correlation_radius:
            raise ValueError("matching_expert reads the correlation out: give a correlation_radius > 0")

    def level(self, index: int) -> int:
        """The level number of ``channels[index]``."""
        return self.input_level + index

    def correlation_radius_at(self, index: int) -> int:
        """The correlation radius of decoder level ``channels[index]`` (0: no correlation)."""
        coarsest = index == len(self.channels) - 1
        return (self.coarsest_correlation_radius or self.correlation_radius) if coarsest else self.correlation_radius


class WindowedMoATransformer(nn.Module):
    """Transformer block on non-overlapping ``window``^3 windows with a Mixture of Attention heads."""

    def __init__(self, dim: int, config: SHMoARegConfig) -> None:
        super().__init__()
        self.window = config.window
        self.position = nn.Conv3d(dim, dim, 3, padding=1, groups=dim)
        self.norm_attention = nn.LayerNorm(dim)
        self.attention = MixtureOfAttentionHeads(dim, config.head_experts, config.top_k, config.head_dim,
                                                 config.router_noise)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def _windows(self, volume: torch.Tensor) -> torch.Tensor:
        b, c, z, y, x = volume.shape
        w = self.window
        tokens = volume.view(b, c, z // w, w, y // w, w, x // w, w).permute(0, 2, 4, 6, 3, 5, 7, 1)
        return tokens.reshape(-1, w ** 3, c)

    def _volume(self, tokens: torch.Tensor, b: int, shape: tuple[int, int, int]) -> torch.Tensor:
        z, y, x = shape
        w = self.window
        c = tokens.shape[-1]
        volume = tokens.view(b, z // w, y // w, x // w, w, w, w, c).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return volume.reshape(b, c, z, y, x)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns features, per-voxel head weights ``(B, T, E)``, chosen heads ``(B, T, k)``, balance loss."""
        b, _, *shape = features.shape
        padded_shape = pad_to_multiple(tuple(shape), self.window)
        padding = [0, padded_shape[2] - shape[2], 0, padded_shape[1] - shape[1], 0, padded_shape[0] - shape[0]]
        volume = F.pad(features + self.position(features), padding)
        tokens = self._windows(volume)
        attended, weights, chosen, balance = self.attention(self.norm_attention(tokens))
        tokens = tokens + attended
        tokens = tokens + self.mlp(self.norm_mlp(tokens))
        z, y, x = shape
        out = self._volume(tokens, b, padded_shape)[:, :, :z, :y, :x]
        weights = self._volume(weights, b, padded_shape)[:, :, :z, :y, :x].flatten(2).transpose(1, 2)
        chosen = self._volume(chosen.float(), b, padded_shape)[:, :, :z, :y, :x].flatten(2).transpose(1, 2).long()
        return out.contiguous(), weights, chosen, balance


class SHMoARegNet(RegistrationNetwork):
    """The SHMoAReg registration network (see the module docstring)."""

    name = "shmoareg"
    Config = SHMoARegConfig

    def __init__(self, config: Optional[SHMoARegConfig] = None) -> None:
        super().__init__(config)
        config = self.config
        widths = config.channels
        self.stems = nn.ModuleList()
        self.attention = nn.ModuleDict()
        for index, width in enumerate(widths):
            level = config.level(index)
            if index == 0:  # at half resolution: the images averaged down 2x (cell-centred, as resize_field)
                block = ConvBlock(1, width)
                self.stems.append(block if config.input_level == 1 else nn.Sequential(nn.AvgPool3d(2), block))
            elif level in config.attention_levels:
                self.stems.append(nn.Conv3d(widths[index - 1], width, 2, stride=2))
                self.attention[str(level)] = WindowedMoATransformer(width, config)
            else:
                self.stems.append(ConvBlock(widths[index - 1], width, stride=2))
        self.fuse = nn.ModuleList()
        self.heads = nn.ModuleList()
        for index, width in enumerate(widths):
            coarser = widths[index + 1] if index + 1 < len(widths) else 0
            costs = (2 * config.correlation_radius_at(index) + 1) ** 3 if config.correlation_radius_at(index) else 0
            self.fuse.append(ConvBlock(2 * width + coarser + costs, width))
            self.heads.append(SpatiallyHeterogeneousMoE(width, config.experts, config.factorised_experts,
                                                        extra_experts=int(config.matching_expert)))

    def can_grow_from(self, source: RegistrationNetwork) -> bool:
        """True when ``source`` is this network without the local correlation (and without a matching expert)."""
        if self.config.matching_expert or not isinstance(source, SHMoARegNet):
            return False
        return source.config == replace(self.config, correlation_radius=0, coarsest_correlation_radius=0) != self.config

    def grow_from(self, source: RegistrationNetwork) -> None:
        """Take ``source``'s weights (:meth:`can_grow_from`); each fusion's cost channels get zero weights, so
        the correlation enters as training finds it useful and the first prediction is ``source``'s."""
        if not self.can_grow_from(source):
            raise ValueError("grow_from takes this SHMoAReg network without its correlation, nothing else")
        state = source.state_dict()
        for index, width in enumerate(self.config.channels):
            key = f"fuse.{index}.0.weight"
            narrow, grown = state[key], torch.zeros_like(self.state_dict()[key])
            grown[:, :2 * width] = narrow[:, :2 * width]  # fixed and warped moving features
            coarser = narrow.shape[1] - 2 * width  # the upsampled decoded features follow the costs
            if coarser:
                grown[:, -coarser:] = narrow[:, 2 * width:]
            state[key] = grown
        self.load_state_dict(state)

    def size_multiple(self) -> int:
        """The coarsest level's factor: each level halves the one before."""
        return 2 ** (self.config.level(len(self.config.channels) - 1) - 1)

    def map_specs(self) -> list[MapSpec]:
        """Per decoder level and displacement axis, the expert with the highest gate."""
        names = tuple(expert["name"] for expert in self.expert_descriptions())
        return [MapSpec(expert_map_name(level, axis), "categorical", level,
                        f"decoder level {level}, {axis} displacement: the expert with the highest gate",
                        categories=names, axis=axis)
                for level in self.decoder_levels() for axis in AXES]

    def decoder_levels(self) -> list[int]:
        """The levels with an SHMoE flow head, finest first."""
        return [self.config.level(index) for index in range(len(self.config.channels))]

    def expert_descriptions(self) -> list[dict[str, Any]]:
        """Each decoder expert's kernel, dilation and receptive field (voxels of its level)."""
        experts = [{"name": f"k{k}d{d} (RF {d * (k - 1) + 1})", "kernel_size": k, "dilation": d,
                    "receptive_field": d * (k - 1) + 1} for k, d in self.config.experts]
        if self.config.matching_expert:
            side = 2 * self.config.correlation_radius + 1
            experts.append({"name": f"matching (RF {side})", "kernel_size": side, "dilation": 1,
                            "receptive_field": side})
        return experts

    def _encode(self, images: torch.Tensor, routing: RoutingRecord) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pyramid, balances = [], []
        features = images
        for index, stem in enumerate(self.stems):
            level = self.config.level(index)
            features = stem(features)
            if str(level) in self.attention:
                features, weights, chosen, balance = self.attention[str(level)](features)
                routing.moa_weights[level], routing.moa_choices[level] = weights, chosen
                balances.append(balance)
            pyramid.append(features)
        return pyramid, balances

    def predict(self, fixed: torch.Tensor, moving: torch.Tensor) -> ModelOutput:
        routing = RoutingRecord()
        pyramid, balances = self._encode(torch.cat([fixed, moving], dim=0), routing)
        batch = fixed.shape[0]
        field: Optional[torch.Tensor] = None
        decoded: Optional[torch.Tensor] = None
        for index in range(len(pyramid) - 1, -1, -1):
            radius = self.config.correlation_radius_at(index)
            field, decoded, costs = warp_and_fuse(self.fuse[index], pyramid[index][:batch], pyramid[index][batch:],
                                                  field, decoded, radius)
            matched = [matching_displacement(costs, radius)] if self.config.matching_expert else []
            residual, gates, balance = self.heads[index](decoded, matched)
            if self.config.diffeomorphic:
                residual = integrate_velocity(residual, self.config.integration_steps)
            field = residual if field is None else compose(field, residual)
            routing.decoder_gates[self.config.level(index)] = gates
            balances.append(balance)
        if field.shape[2:] != fixed.shape[2:]:
            field = resize_field(field, tuple(fixed.shape[2:]))
        maps = {expert_map_name(level, axis): gates[:, index].argmax(dim=1, keepdim=True) + 1
                for level, gates in routing.decoder_gates.items() for index, axis in enumerate(AXES)}
        return ModelOutput(field, routing, torch.stack(balances).mean(), maps)


def expert_map_name(level: int, axis: str) -> str:
    """The name of the arg-max expert map of a decoder level and displacement axis."""
    return f"level{level}_{axis}_expert"
