"""The sibling networks register through the Slicer logic with their shipped weights, and their maps load as
overlays of the right kind (issue 10, points 6 and 7)."""

from __future__ import annotations

import pytest
import slicer

from mrml_helpers import logicFor, onGridInFrameOf
from SHMoARegLib import RegistrationOptions
from SHMoARegLib.options import MODELS

SIBLINGS = [name for name in MODELS if name not in ("shmoareg", "unet", "none")]
# What each network's maps are (its map_specs), by name pattern: categorical or scalar.
KINDS = {"sacbnet": {"cluster": "categorical"},
         "rman": {"residual_magnitude": "scalar", "attention_entropy": "scalar"},
         "adregnet": {"regional_gate": "scalar"}}


@pytest.mark.parametrize("model", SIBLINGS)
def test_a_sibling_network_registers_and_its_maps_load(scene, pair, tmp_path, model):
    result = logicFor(scene, tmp_path).register(pair.fixed, pair.moving, options=RegistrationOptions(
        model=model, device="cpu", refineSteps=5))
    assert result.summary["model"]["name"] == model and result.summary["network_prediction"] in ("used", "rejected")
    assert result.mapNodes and {info.name for info in result.maps} == set(result.mapNodes)
    for info in result.maps:
        node = result.mapNodes[info.name]
        expected = next(kind for pattern, kind in KINDS[model].items() if pattern in info.name)
        assert info.kind == expected
        assert node.IsA("vtkMRMLLabelMapVolumeNode") == (expected == "categorical")
        assert onGridInFrameOf(node, pair.fixed, info.spacingMm)
        colors = node.GetDisplayNode().GetColorNode()
        assert colors is not None
        if expected == "categorical":
            assert colors.GetNumberOfColors() >= len(info.categories) + 1
            assert colors.GetColorName(1) == info.categories[0].name
        assert len(slicer.util.arrayFromVolume(node).shape) == 3
    assert result.utilisationTableNode.GetNumberOfRows() == len(result.maps)
