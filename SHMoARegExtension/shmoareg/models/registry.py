"""Model registry: every :class:`RegistrationNetwork` subclass, by the name it declares.

Importing this module imports every module of the ``shmoareg.models`` package, which registers each
class (``name`` is declared once, on the class): a new model is a new module, and nothing else changes.
A name and a config mapping build a network with the typed config builder.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, Optional

from shmoareg.errors import InputError
from shmoareg.models.base import RegistrationNetwork
from shmoareg.protocol import default_first
from shmoareg.typed_config import build_dataclass, plain

for _module in pkgutil.iter_modules([str(Path(__file__).parent)]):
    importlib.import_module(f"shmoareg.models.{_module.name}")
MODEL_NAMES = default_first(RegistrationNetwork.registry)


def model_class(name: str) -> type[RegistrationNetwork]:
    """The registered network class called ``name``."""
    if name not in RegistrationNetwork.registry:
        raise InputError(f"unknown model {name!r}; available: {', '.join(MODEL_NAMES)}")
    return RegistrationNetwork.registry[name]


def build_model(name: str, config: Optional[dict[str, Any]] = None) -> RegistrationNetwork:
    """A fresh (untrained) network ``name`` with ``config`` overriding its defaults."""
    network = model_class(name)
    try:
        return network(build_dataclass(network.Config(), config or {}, f"config of model {name!r}"))
    except (TypeError, ValueError) as error:
        if isinstance(error, InputError):
            raise
        raise InputError(f"invalid config for model {name!r}: {error}") from None


def model_config(model: RegistrationNetwork) -> dict[str, Any]:
    """The config of a built model as plain JSON-friendly values."""
    return plain(model.config)
