"""Slicer-side logic of SHMoAReg: MRML nodes <-> files, the engine process, result import. Never imports qt."""

from SHMoARegLib.evaluation import TG132_RULE, describeMetrics
from SHMoARegLib.logic import RegistrationCancelled, RegistrationError, RegistrationRunner
from SHMoARegLib.options import (
    DEFAULT_DEVICE,
    DEFAULT_MODEL,
    DEFAULT_SIMILARITY,
    DETAIL_RANGE,
    DEVICES,
    ENGINE_CHOOSES_STEPS,
    MODELS,
    SIMILARITIES,
    RegistrationOptions,
    optionsFromPanel,
)
from SHMoARegLib.qa import checkerboardVolume, differenceVolume
from SHMoARegLib.results import RegistrationResult, describeNetworkShare
from SHMoARegLib.routing import AXES, parseRoutingKey, routingKey
from SHMoARegLib.volumes import defaultFixedVolume

__all__ = ["AXES", "DEFAULT_DEVICE", "DEFAULT_MODEL", "DEFAULT_SIMILARITY", "DETAIL_RANGE", "DEVICES",
           "ENGINE_CHOOSES_STEPS", "MODELS", "SIMILARITIES", "TG132_RULE", "RegistrationCancelled", "RegistrationError",
           "RegistrationOptions", "RegistrationResult", "RegistrationRunner", "checkerboardVolume", "defaultFixedVolume", "describeMetrics",
           "describeNetworkShare", "differenceVolume", "optionsFromPanel", "parseRoutingKey", "routingKey"]
