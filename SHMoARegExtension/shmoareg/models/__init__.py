"""Registration networks behind one interface, looked up by name (see :func:`build_model`)."""

from shmoareg.models.base import AXES, MapSpec, ModelOutput, RegistrationNetwork, RoutingRecord
from shmoareg.models.registry import MODEL_NAMES, build_model

__all__ = ["AXES", "MODEL_NAMES", "MapSpec", "ModelOutput", "RegistrationNetwork", "RoutingRecord", "build_model"]
