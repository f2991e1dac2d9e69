"""Slicer-side logic of SHMoAReg: MRML nodes <-> files, the engine process, result import. Never imports qt."""

from SHMoARegLib.logic import RegistrationCancelled, RegistrationError, SHMoARegLogic
from SHMoARegLib.options import DEFAULT_MODEL, DEVICES, MODELS, RegistrationOptions
from SHMoARegLib.results import RegistrationResult, describeNetworkShare
from SHMoARegLib.routing import AXES, parseRoutingKey, routingKey

__all__ = ["AXES", "DEFAULT_MODEL", "DEVICES", "MODELS", "RegistrationCancelled", "RegistrationError",
           "RegistrationOptions", "RegistrationResult", "SHMoARegLogic", "describeNetworkShare", "parseRoutingKey",
           "routingKey"]
