"""Registration networks behind one interface, looked up by name (see :func:`build_model`)."""

from shmoareg.models.base import AXES, ModelOutput, RoutingRecord
from shmoareg.models.registry import MODEL_NAMES, build_model

__all__ = ["AXES", "MODEL_NAMES", "ModelOutput", "RoutingRecord", "build_model"]
