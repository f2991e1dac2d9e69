"""A VoxelMorph-style U-Net baseline: fixed and moving concatenated, one flow layer at full resolution."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from shmoareg.models.base import ModelOutput, RegistrationNetwork
from shmoareg.models.layers import ConvBlock, upsample_to, zero_init_flow
from shmoareg.spatial import integrate_velocity


@dataclass(frozen=True)
class UNetConfig:
    """Widths per level (the first is full resolution) and the diffeomorphic switch."""

    channels: tuple[int, ...] = (8, 16, 32, 32, 32)
    diffeomorphic: bool = False
    integration_steps: int = 7


class UNetRegistration(RegistrationNetwork):
    """Encoder (strided conv blocks), decoder with skips, a 3x3x3 flow layer (VoxelMorph-like)."""

    name = "unet"
    Config = UNetConfig

    def __init__(self, config: Optional[UNetConfig] = None) -> None:
        super().__init__(config)
        widths = self.config.channels
        self.encoder = nn.ModuleList(
            [ConvBlock(2, widths[0])] + [ConvBlock(widths[i - 1], widths[i], stride=2) for i in range(1, len(widths))])
        self.decoder = nn.ModuleList(
            [ConvBlock(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1)])
        self.flow = zero_init_flow(nn.Conv3d(widths[0], 3, 3, padding=1))

    def size_multiple(self) -> int:
        """Each level below the first halves the grid."""
        return 2 ** (len(self.config.channels) - 1)

    def predict(self, fixed: torch.Tensor, moving: torch.Tensor) -> ModelOutput:
        skips = []
        features = torch.cat([fixed, moving], dim=1)
        for block in self.encoder:
            features = block(features)
            skips.append(features)
        for index in range(len(self.decoder) - 1, -1, -1):
            skip = skips[index]
            features = self.decoder[index](torch.cat([upsample_to(features, skip.shape[2:]), skip], dim=1))
        flow = self.flow(features)
        if self.config.diffeomorphic:
            flow = integrate_velocity(flow, self.config.integration_steps)
        return ModelOutput(flow)
