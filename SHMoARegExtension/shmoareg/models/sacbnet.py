"""SACB-Net: spatial-awareness convolution blocks and parameter-free local matching, coarse to fine.

Our reading of SACB-Net (CVPR 2025) behind the project's model contract. A shared encoder turns the
fixed and the moving image into feature pyramids (level 1 is the input's resolution, each further
level the one before averaged down 2x, then two 3^3 convolutions with instance norm and LeakyReLU 0.1).
From the coarsest level to level 2, the moving features are warped by the field so far, a
spatial-awareness block (:class:`SpatialAwarenessBlock`) refines the fixed and the warped moving
features, and :func:`local_matching` turns their correlation in a 3x3x3 window into a sub-field of at
most one voxel, composed with the field so far. A small conv head at level 1 adds the last residual.

Choices the paper leaves open (or that we changed), and why:

* Size: channels (4, 16, 16, 24, 32) for levels 1..5, MLP hidden widths 64 (kernel) and 32 (bias),
  blocks at 1/2 to 1/16: 252,815 parameters, matched to ``shmoareg`` (251,864) and ``unet`` (263,067);
  the paper's 8/16/32/64/64 with 128/64 hidden widths has 1.1 M. Level 1 is only 4 wide because on a
  CPU the full-resolution convolutions dominate: forward at 160x192x224 takes 16-23 s on one thread of
  a loaded 2-core machine (the shipped ``shmoareg`` config 42-54 s in the same runs), peak RSS 1.9 GB.
* Deterministic k-means: initial centroids are the voxels at evenly spaced quantiles of the feature
  norm (stable sort), at most ``kmeans_iterations`` Lloyd steps (stop when no voxel changes), an empty
  cluster keeps its centroid, and clusters are numbered by increasing centroid norm (ties: initial
  order). The paper starts at random and has no cap, so its maps change from run to run. Centroids
  are fitted on at most ``kmeans_samples`` voxels (a regular grid of the smallest stride that keeps
  that few; every voxel at the training size), then every voxel joins its nearest centroid: at 1/2 of
  160x192x224 (860k voxels) the fit costs an eighth to a thirtieth, and the 3^3-averaged vectors vary
  smoothly enough for a stride of 2-3 to represent them. Sums are one-hot matrix products, not
  scatter-adds (whose atomic additions on a GPU would make the clusters differ from run to run).
* K-means runs under ``no_grad`` in float32 on the detached features: assignments are not
  differentiated. The centroids fed to the MLPs are then recomputed with gradients as the members'
  mean, so the projection conv learns through them as well as through the convolution.
* Fixed and warped moving features are clustered separately (each image and batch item has its own
  clusters, as the block runs on each image); the map is the fixed image's clusters.
* The clustered vectors are the 3^3 neighbourhood means (border voxels average their neighbours
  inside the volume) of the projected features h = LeakyReLU(conv3^3(x)); the cluster's kernel
  convolves h, and the block returns x + LeakyReLU(conv_k(h) + bias_k).
* Per-cluster convolution without one conv per cluster and without unfolding patches: the kernel of
  cluster k is W * s_k (W the shared ``(C_out, C_in, 3, 3, 3)`` weight, s_k in (0, 1)^27 one scale per
  tap), so out(p) = sum_t s_{k(p)}[t] * (W_t h)(p + t). We loop over the 27 taps: a matrix product
  with W_t over the padded volume and a per-voxel multiply-add of its shifted window with the gathered
  scale (:func:`cluster_convolution`). Cost: the multiply-adds of one 3^3 conv plus 27 elementwise
  passes over C_out channels; memory at inference: the padded input, the output and one tap's
  response (C_in + 2 C_out per voxel), where the paper's unfolded patches cost 27 C_in per voxel
  (~1.5 GB per image at 1/2 of 160x192x224) and its per-cluster convs 7 convs. Training keeps each
  tap's response and scale for backward (27 (C_out + 1) per voxel; small at the 48^3 of training).
* Matching: logits_t(p) = g_l * <F(p), M(p + t)> / sqrt(C) over the 27 offsets t (moving features
  padded by replicating the border, as ``warp`` does), softmax, expected offset (x, y, z). Parameter
  free apart from one gain g_l per level, initialised to 1e-3 (and scaled by 10 inside, so Adam moves
  it at a useful pace): untrained, the softmax is nearly uniform and the network predicts almost no
  motion, as the project's flow heads do; trained, g_l sets how sharp the matching is.
* Coarse to fine with ``resize_field`` (values x2) and ``compose(field, sub_field)`` (the new sub-field
  acts first, in fixed space), the conventions of :mod:`shmoareg.spatial`; channels (x, y, z); the
  argument order (fixed, moving), any batch size, any device.
* Head: [fixed features, warped moving features] at level 1 -> 3^3 conv + LeakyReLU -> zero-initialised
  3^3 conv, a residual composed like the sub-fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from shmoareg.models.base import MapSpec, ModelOutput, RegistrationNetwork
from shmoareg.models.layers import zero_init_flow
from shmoareg.spatial import compose, resize_field, warp

NEGATIVE_SLOPE = 0.1
GAIN_SCALE = 10.0  # the matching gain is GAIN_SCALE * parameter (see the module docstring)
# The 27 offsets (dz, dy, dx) of a 3x3x3 window, z slowest: tap t of a 3^3 kernel is offset t.
OFFSETS = tuple((dz, dy, dx) for dz in (-1, 0, 1) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


@dataclass(frozen=True)
class SACBNetConfig:
    """Sizes of SACB-Net. ``channels[i]`` is the encoder width at level ``i + 1`` (level 1: the input's
    resolution, level L: 2^(L-1) coarser); matching runs at levels 2..L, blocks at ``block_levels``."""

    channels: tuple[int, ...] = (4, 16, 16, 24, 32)
    block_levels: tuple[int, ...] = (2, 3, 4, 5)
    clusters: int = 7
    kmeans_iterations: int = 10
    kmeans_samples: int = 32768
    kernel_hidden: int = 64
    bias_hidden: int = 32

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or any(width < 1 for width in self.channels):
            raise ValueError("channels must list at least two positive widths (level 1 and one coarser level)")
        levels = len(self.channels)
        if len(set(self.block_levels)) != len(self.block_levels) or any(
                not 2 <= level <= levels for level in self.block_levels):
            raise ValueError(f"block_levels must be distinct levels in 2..{levels}")
        if self.clusters < 1:
            raise ValueError(f"clusters must be at least 1, not {self.clusters}")
        if self.kmeans_iterations < 1:
            raise ValueError(f"kmeans_iterations must be at least 1, not {self.kmeans_iterations}")
        if self.kmeans_samples < self.clusters:
            raise ValueError(f"kmeans_samples must be at least clusters ({self.clusters}), not {self.kmeans_samples}")
        if self.kernel_hidden < 1 or self.bias_hidden < 1:
            raise ValueError("kernel_hidden and bias_hidden must be positive")


def _conv_unit(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv3d(in_channels, out_channels, 3, padding=1), nn.InstanceNorm3d(out_channels, affine=True),
            nn.LeakyReLU(NEGATIVE_SLOPE)]


class EncoderLevel(nn.Sequential):
    """Optional 2x average pooling, then two 3^3 convolutions with instance norm and LeakyReLU 0.1."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__(*([nn.AvgPool3d(2)] if downsample else []),
                         *_conv_unit(in_channels, out_channels), *_conv_unit(out_channels, out_channels))


@torch.no_grad()
def kmeans(vectors: torch.Tensor, clusters: int, iterations: int, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic k-means of the voxels' vectors ``(B, C, Z, Y, X)``, each batch item on its own.

    Returns each voxel's cluster ``(B, N)`` (0..clusters-1, numbered by increasing centroid norm) and
    the centroids ``(B, clusters, C)`` in that order. The centroids are fitted on the voxels of a
    regular grid of stride s, the smallest s leaving at most ``samples`` voxels (every voxel when there
    are fewer), starting at the vectors at evenly spaced quantiles of the norm (stable sort) and
    stopping after ``iterations`` Lloyd steps or when no assignment changes; an empty cluster keeps its
    centroid. Then every voxel joins its nearest centroid. Float32, autocast off.
    """
    with torch.autocast(vectors.device.type, enabled=False):
        vectors = vectors.float()
        stride = 1
        while math.prod(-(-n // stride) for n in vectors.shape[2:]) > samples:
            stride += 1
        fitted = vectors[:, :, ::stride, ::stride, ::stride].flatten(2)  # (B, C, M)
        count = fitted.shape[2]
        order = torch.sort(fitted.norm(dim=1), dim=1, stable=True).indices
        ranks = ((torch.arange(clusters, device=vectors.device) + 0.5) * count / clusters).long().clamp(max=count - 1)
        centroids = torch.gather(fitted, 2, order[:, None, ranks].expand(-1, fitted.shape[1], -1)).transpose(1, 2)
        assignments = None
        for _ in range(iterations):
            new = nearest(fitted, centroids)
            if assignments is not None and torch.equal(new, assignments):
                break
            assignments = new
            sums, counts = cluster_sums(fitted, assignments, clusters)
            centroids = torch.where(counts.unsqueeze(2) > 0, sums / counts.clamp(min=1).unsqueeze(2), centroids)
        ranking = torch.sort(centroids.norm(dim=2), dim=1, stable=True).indices  # new label -> old label
        centroids = torch.gather(centroids, 1, ranking.unsqueeze(2).expand(-1, -1, centroids.shape[2]))
        return nearest(vectors.flatten(2), centroids), centroids


def nearest(vectors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The index of the nearest of ``centroids`` ``(B, K, C)`` to each of ``vectors`` ``(B, C, N)``
    (the first on ties)."""
    distances = centroids.pow(2).sum(dim=2, keepdim=True) - 2 * torch.bmm(centroids, vectors)  # (B, K, N)
    return distances.argmin(dim=1)


def cluster_sums(vectors: torch.Tensor, assignments: torch.Tensor, clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per batch item and cluster, the sum of its vectors ``(B, K, C)`` (from ``(B, C, N)``) and its size
    ``(B, K)``. A one-hot matrix product rather than a scatter-add, whose atomic float additions on a
    GPU would make the sums (and so the clusters) differ from run to run."""
    one_hot = F.one_hot(assignments, clusters).to(vectors.dtype)  # (B, N, K)
    return torch.bmm(vectors, one_hot).transpose(1, 2), one_hot.sum(dim=1)


def _shifted(volume: torch.Tensor, offset: tuple[int, int, int], shape: tuple[int, ...]) -> torch.Tensor:
    """The window of a volume padded by one voxel per side that sits at ``offset`` (dz, dy, dx)."""
    (dz, dy, dx), (z, y, x) = offset, shape
    return volume[:, :, 1 + dz:1 + dz + z, 1 + dy:1 + dy + y, 1 + dx:1 + dx + x]


class SpatialAwarenessBlock(nn.Module):
    """Cluster-adaptive convolution: k-means clusters of local features pick a per-cluster 3^3 kernel
    (a learned per-tap scaling of one shared kernel) and bias (see the module docstring)."""

    def __init__(self, channels: int, config: SACBNetConfig) -> None:
        super().__init__()
        self.clusters = config.clusters
        self.iterations = config.kmeans_iterations
        self.samples = config.kmeans_samples
        self.project = nn.Conv3d(channels, channels, 3, padding=1)
        self.weight = nn.Parameter(torch.empty(channels, channels, 27))
        nn.init.kaiming_uniform_(self.weight.view(channels, channels, 3, 3, 3), a=math.sqrt(5))
        hidden = config.kernel_hidden
        self.kernel_mlp = nn.Sequential(nn.Linear(channels, hidden), nn.LeakyReLU(NEGATIVE_SLOPE),
                                        nn.Linear(hidden, hidden), nn.LeakyReLU(NEGATIVE_SLOPE),
                                        nn.Linear(hidden, 27), nn.Sigmoid())
        hidden = config.bias_hidden
        self.bias_mlp = nn.Sequential(nn.Linear(channels, hidden), nn.LeakyReLU(NEGATIVE_SLOPE),
                                      nn.Linear(hidden, hidden), nn.LeakyReLU(NEGATIVE_SLOPE),
                                      nn.Linear(hidden, channels))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The refined features and each voxel's cluster ``(B, 1, Z, Y, X)`` (0..K-1)."""
        batch, _, *shape = features.shape
        projected = F.leaky_relu(self.project(features), NEGATIVE_SLOPE)
        local = neighbourhood_mean(projected)
        assignments, fitted = kmeans(local.detach(), self.clusters, self.iterations, self.samples)
        sums, counts = cluster_sums(local.flatten(2), assignments, self.clusters)
        counts = counts.unsqueeze(2)  # the members' mean, with gradients; an empty cluster keeps its k-means centroid
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), fitted.to(sums.dtype))
        scales = self.kernel_mlp(centroids)  # (B, K, 27)
        biases = self.bias_mlp(centroids)  # (B, K, C)
        output = cluster_convolution(projected, self.weight, assignments, scales, biases)
        return features + F.leaky_relu(output, NEGATIVE_SLOPE), assignments.view(batch, 1, *shape)


def neighbourhood_mean(volume: torch.Tensor) -> torch.Tensor:
    """The mean over each voxel's 3x3x3 neighbourhood, at a border over the neighbours inside the volume
    (``avg_pool3d`` with ``count_include_pad=False``, which refuses sides under 3 voxels)."""
    ones = volume.new_ones((1, 1, *volume.shape[2:]))
    sums, counts = (F.avg_pool3d(F.pad(v, (1, 1, 1, 1, 1, 1)), 3, stride=1) for v in (volume, ones))
    return sums / counts


def cluster_convolution(features: torch.Tensor, weight: torch.Tensor, assignments: torch.Tensor,
                        scales: torch.Tensor, biases: torch.Tensor) -> torch.Tensor:
    """Each voxel convolved (zero padding) with its cluster's kernel ``weight * scales[k]`` plus ``biases[k]``.

    ``features`` ``(B, C_in, Z, Y, X)``, ``weight`` ``(C_out, C_in, 27)`` (taps in :data:`OFFSETS` order,
    that of a flattened 3^3 kernel), ``assignments`` ``(B, N)`` (0..K-1), ``scales`` ``(B, K, 27)``,
    ``biases`` ``(B, K, C_out)``. One pass per tap: the tap's matrix product over the padded volume,
    then a multiply-add of its shifted window with the voxels' scales (see the module docstring).
    """
    batch, shape, channels = features.shape[0], tuple(features.shape[2:]), weight.shape[0]
    index = assignments.unsqueeze(1).expand(-1, channels, -1)
    output = torch.gather(biases.transpose(1, 2), 2, index).view(batch, channels, *shape)
    padded = F.pad(features, (1, 1, 1, 1, 1, 1))
    padded_shape = padded.shape[2:]
    padded = padded.flatten(2)
    for tap, offset in enumerate(OFFSETS):
        response = torch.bmm(weight[:, :, tap].expand(batch, -1, -1), padded).view(batch, channels, *padded_shape)
        scale = torch.gather(scales[:, :, tap], 1, assignments).view(batch, 1, *shape)
        output = output.addcmul_(scale, _shifted(response, offset, shape))
    return output


def local_matching(fixed: torch.Tensor, moving: torch.Tensor, gain: torch.Tensor | float = 1.0) -> torch.Tensor:
    """The expected offset ``(B, 3, Z, Y, X)`` (channels x, y, z; voxels, within +-1) of each fixed voxel's
    best match among the moving voxels of its 3x3x3 window: softmax over the 27 offsets of
    ``gain * <fixed(p), moving(p + t)> / sqrt(C)``. With ``moving(p + e) = fixed(p)`` it tends to ``e``,
    the field ``u`` of ``warp`` (``moving(p + u(p)) = fixed(p)``)."""
    channels, shape = fixed.shape[1], tuple(fixed.shape[2:])
    padded = F.pad(moving, (1, 1, 1, 1, 1, 1), mode="replicate")
    logits = torch.cat([(fixed * _shifted(padded, offset, shape)).sum(dim=1, keepdim=True) for offset in OFFSETS],
                       dim=1) * (gain / math.sqrt(channels))
    weights = torch.softmax(logits, dim=1)
    offsets = torch.tensor([(dx, dy, dz) for dz, dy, dx in OFFSETS], device=fixed.device, dtype=weights.dtype)
    return torch.einsum("bt...,tc->bc...", weights, offsets)


class SACBNet(RegistrationNetwork):
    """SACB-Net (see the module docstring)."""

    name = "sacbnet"
    Config = SACBNetConfig

    def __init__(self, config: Optional[SACBNetConfig] = None) -> None:
        super().__init__(config)
        widths = self.config.channels
        self.encoder = nn.ModuleList(
            [EncoderLevel(1 if index == 0 else widths[index - 1], width, index > 0) for index, width in enumerate(widths)])
        self.blocks = nn.ModuleDict({str(level): SpatialAwarenessBlock(widths[level - 1], self.config)
                                     for level in self.config.block_levels})
        self.match_gain = nn.Parameter(torch.full((len(widths) - 1,), 1e-3 / GAIN_SCALE))
        self.head = nn.Sequential(nn.Conv3d(2 * widths[0], widths[0], 3, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE),
                                  zero_init_flow(nn.Conv3d(widths[0], 3, 3, padding=1)))

    def size_multiple(self) -> int:
        """The coarsest level's factor: each level halves the one before."""
        return 2 ** (len(self.config.channels) - 1)

    def map_specs(self) -> list[MapSpec]:
        """Per block level, the fixed image's k-means cluster (numbered by increasing centroid norm)."""
        categories = tuple(f"cluster {index}" for index in range(1, self.config.clusters + 1))
        return [MapSpec(cluster_map_name(level), "categorical", level,
                        f"level {level}: the k-means cluster of the fixed image's local features "
                        "(numbered by increasing centroid norm)", categories=categories)
                for level in sorted(self.config.block_levels)]

    def predict(self, fixed: torch.Tensor, moving: torch.Tensor) -> ModelOutput:
        batch = fixed.shape[0]
        pyramid = []
        features = torch.cat([fixed, moving], dim=0)
        for level in self.encoder:
            features = level(features)
            pyramid.append(features)
        maps = {}
        field: Optional[torch.Tensor] = None
        for level in range(len(pyramid), 1, -1):
            fixed_features, moving_features = pyramid[level - 1][:batch], pyramid[level - 1][batch:]
            if field is not None:
                field = resize_field(field, tuple(fixed_features.shape[2:]))
                moving_features = warp(moving_features, field)
            if str(level) in self.blocks:
                refined, clusters = self.blocks[str(level)](torch.cat([fixed_features, moving_features], dim=0))
                fixed_features, moving_features = refined[:batch], refined[batch:]
                maps[cluster_map_name(level)] = clusters[:batch] + 1
            sub_field = local_matching(fixed_features, moving_features, GAIN_SCALE * self.match_gain[level - 2])
            field = sub_field if field is None else compose(field, sub_field)
        field = resize_field(field, tuple(fixed.shape[2:]))
        residual = self.head(torch.cat([pyramid[0][:batch], warp(pyramid[0][batch:], field)], dim=1))
        return ModelOutput(compose(field, residual), maps=maps)


def cluster_map_name(level: int) -> str:
    """The name of the cluster map of a block level."""
    return f"level{level}_cluster"
