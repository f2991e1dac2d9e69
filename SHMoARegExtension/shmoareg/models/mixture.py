"""The two mixture-of-experts layers of SHMoAReg.

* :class:`MixtureOfAttentionHeads`: multi-head attention whose heads are experts. Each head has its
  own query and output projection; keys and values are shared. A router picks the top-k heads per
  token (noisy top-k gating while training) and weights them with a softmax over the chosen logits.
* :class:`SpatiallyHeterogeneousMoE`: a flow head whose experts are convolutions (full, or factorised
  for CPU speed) with different receptive fields; a per-voxel gate, separate for the x, y and z
  displacement components, mixes the experts' outputs for that component.

Both return a Switch-style load-balancing loss (the SHMoE head only while training) ``E * sum_e f_e * P_e`` (``f_e`` share of
assignments, ``P_e`` mean router probability): 1 when routing is uniform, ``E`` when it collapses.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def load_balancing_loss(probabilities: torch.Tensor, assignments: torch.Tensor) -> torch.Tensor:
    """``E * sum_e f_e P_e`` over the last dimension (experts); both inputs ``(..., E)``."""
    experts = probabilities.shape[-1]
    mean_probability = probabilities.reshape(-1, experts).mean(dim=0)
    share = assignments.reshape(-1, experts).float().mean(dim=0)
    share = share / share.sum().clamp(min=1e-12)
    return experts * torch.sum(share * mean_probability)


class MixtureOfAttentionHeads(nn.Module):
    """Attention over ``(N, T, C)`` tokens with ``experts`` head-experts of which ``top_k`` are used per token."""

    def __init__(self, dim: int, experts: int = 4, top_k: int = 2, head_dim: int = 16,
                 router_noise: float = 1.0) -> None:
        super().__init__()
        if not 1 <= top_k <= experts:
            raise ValueError(f"top_k must be between 1 and the number of experts ({experts}), not {top_k}")
        self.experts, self.top_k, self.head_dim, self.router_noise = experts, top_k, head_dim, router_noise
        self.key = nn.Linear(dim, head_dim)
        self.value = nn.Linear(dim, head_dim)
        self.queries = nn.Parameter(torch.randn(experts, dim, head_dim) / math.sqrt(dim))
        self.outputs = nn.Parameter(torch.randn(experts, head_dim, dim) / math.sqrt(head_dim))
        self.router = nn.Linear(dim, experts)
        self.noise = nn.Linear(dim, experts)

    def route(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Routing weights ``(N, T, E)`` (zero off the top-k), chosen heads ``(N, T, k)``, balance loss.

        Routing runs in float32 whatever the autocast precision: CUDA autocast computes the softmax in
        float32 while the router's linear layer gives bfloat16, and the scatter needs one dtype.
        """
        clean = self.router(tokens).float()
        logits = clean
        if self.training and self.router_noise > 0:
            logits = clean + torch.randn_like(clean) * F.softplus(self.noise(tokens)) * self.router_noise
        top_logits, chosen = logits.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(logits).scatter(-1, chosen, torch.softmax(top_logits, dim=-1))
        assignments = torch.zeros_like(logits).scatter(-1, chosen, 1.0)
        return weights, chosen, load_balancing_loss(torch.softmax(clean, dim=-1), assignments)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the attended tokens ``(N, T, C)``, routing weights, chosen heads and the balance loss."""
        weights, chosen, balance = self.route(tokens)
        n, t, _ = tokens.shape
        queries = torch.einsum("ntc,ecd->netd", tokens, self.queries)
        keys = self.key(tokens).unsqueeze(1).expand(n, self.experts, t, self.head_dim)
        values = self.value(tokens).unsqueeze(1).expand(n, self.experts, t, self.head_dim)
        heads = F.scaled_dot_product_attention(queries, keys, values)  # (N, E, T, d)
        projected = torch.einsum("netd,edc->netc", heads, self.outputs)
        return torch.einsum("nte,netc->ntc", weights, projected), weights, chosen, balance


class FactorisedExpert(nn.Module):
    """One SHMoE expert: a pointwise projection to (x, y, z), then a depthwise dilated filter along z, y and x.

    Its receptive field is ``dilation * (kernel - 1) + 1`` voxels per side, as a full ``kernel``^3 conv
    with that dilation, at a fraction of the CPU cost: a full 3D convolution on few channels runs on
    PyTorch's slow CPU path (about 250 ms forward and backward at 48^3 against about 15 ms for this).
    The depthwise filters start as box averages, so an untrained expert is a smoothed linear read-out
    (box sums, whose output moves per Adam step as much as a full kernel's, made wide networks noisy).
    """

    def __init__(self, in_channels: int, kernel: int, dilation: int, init_scale: float = 1e-5) -> None:
        super().__init__()
        self.project = nn.Conv3d(in_channels, 3, 1)
        nn.init.normal_(self.project.weight, std=init_scale)
        nn.init.zeros_(self.project.bias)
        reach = dilation * (kernel - 1) // 2
        self.filters = nn.ModuleList()
        for axis in range(3):
            size, padding = [1, 1, 1], [0, 0, 0]
            size[axis], padding[axis] = kernel, reach
            conv = nn.Conv3d(3, 3, tuple(size), padding=tuple(padding), dilation=dilation, groups=3, bias=False)
            nn.init.constant_(conv.weight, 1.0 / kernel)
            self.filters.append(conv)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The expert's displacement proposal ``(B, 3, Z, Y, X)``."""
        proposal = self.project(features)
        for conv in self.filters:
            proposal = conv(proposal)
        return proposal


def _expert(in_channels: int, kernel: int, dilation: int, factorised: bool, init_scale: float) -> nn.Module:
    """One SHMoE expert with near-zero output at first: factorised, or a full dilated convolution."""
    if factorised:
        return FactorisedExpert(in_channels, kernel, dilation, init_scale)
    conv = nn.Conv3d(in_channels, 3, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
    nn.init.normal_(conv.weight, std=init_scale)
    nn.init.zeros_(conv.bias)
    return conv


class SpatiallyHeterogeneousMoE(nn.Module):
    """Flow head: experts ``(kernel, dilation)`` each predict (x, y, z); per-voxel, per-axis gates mix them.

    ``factorised`` False: each expert is a full ``kernel``^3 convolution and the gate a 3^3 convolution
    (the original form, which every checkpoint before issue 9 holds). True: :class:`FactorisedExpert`
    experts and a per-voxel linear router (1x1x1, as token routers of MoE layers are), several times
    cheaper on a CPU, where full 3D convolutions on few channels take PyTorch's slow path.
    """

    def __init__(self, in_channels: int, experts: tuple[tuple[int, int], ...], factorised: bool = False,
                 init_scale: float = 1e-5, extra_experts: int = 0) -> None:
        super().__init__()
        self.expert_specs = tuple((int(k), int(d)) for k, d in experts)
        self.experts = nn.ModuleList(_expert(in_channels, kernel, dilation, factorised, init_scale)
                                     for kernel, dilation in self.expert_specs)
        self.extra_experts = extra_experts
        outputs = 3 * (len(self.expert_specs) + extra_experts)
        self.gate = nn.Conv3d(in_channels, outputs, 1) if factorised else nn.Conv3d(in_channels, outputs, 3, padding=1)

    @property
    def receptive_fields(self) -> list[int]:
        """Receptive field (voxels per side) of each expert: ``dilation * (kernel - 1) + 1``."""
        return [d * (k - 1) + 1 for k, d in self.expert_specs]

    def forward(self, features: torch.Tensor, extra: Sequence[torch.Tensor] = ()
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the field ``(B, 3, Z, Y, X)``, gates ``(B, 3, E, Z, Y, X)`` and the balance loss.

        ``extra``: the proposals ``(B, 3, Z, Y, X)`` of the ``extra_experts`` made outside the head (e.g. a
        matching read-out), gated after the convolution experts.
        """
        if len(extra) != self.extra_experts:
            raise ValueError(f"this head gates {self.extra_experts} extra proposals, not {len(extra)}")
        proposals = torch.stack([expert(features) for expert in self.experts] + list(extra), dim=2)  # (B, 3, E, ...)
        b, _, e = proposals.shape[:3]
        gates = torch.softmax(self.gate(features).view(b, 3, e, *features.shape[2:]), dim=2)
        field = (gates * proposals).sum(dim=2)
        if not self.training:  # the balance loss only matters for training
            return field, gates, field.new_zeros(())
        winners = F.one_hot(gates.argmax(dim=2), e)  # (B, 3, ..., E)
        balance = torch.stack([load_balancing_loss(gates[:, axis].movedim(1, -1), winners[:, axis])
                               for axis in range(3)]).mean()
        return field, gates, balance
