"""Model registry: a name and a config dict build a network."""

from __future__ import annotations

from typing import Any, Optional

import torch.nn as nn

from shmoareg.errors import InputError
from shmoareg.models.shmoareg_net import SHMoARegConfig, SHMoARegNet
from shmoareg.models.unet import UNetConfig, UNetRegistration

_MODELS = {
    "shmoareg": (SHMoARegNet, SHMoARegConfig),
    "unet": (UNetRegistration, UNetConfig),
}
MODEL_NAMES = tuple(_MODELS)


def build_model(name: str, config: Optional[dict[str, Any]] = None) -> nn.Module:
    """A fresh (untrained) network ``name`` with ``config`` overriding its defaults."""
    if name not in _MODELS:
        raise InputError(f"unknown model {name!r}; available: {', '.join(MODEL_NAMES)}")
    model_class, config_class = _MODELS[name]
    try:
        return model_class(config_class.from_dict(config or {}))
    except TypeError as error:
        raise InputError(f"invalid config for model {name!r}: {error}") from None


def model_config(model: nn.Module) -> dict[str, Any]:
    """The config dict of a built model (JSON-friendly)."""
    return model.config.to_dict()
