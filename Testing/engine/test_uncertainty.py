"""The uncertainty map: the ensemble's spread, its units (mm) and grid (the fixed image's)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from shmoareg import pipeline, uncertainty
from shmoareg.resources import SAMPLE_PAIR
from shmoareg.known_warps import brain_case
from shmoareg.optimise import OptimisationSettings
from shmoareg.pipeline import RegistrationRequest, register
from shmoareg.protocol import UNCERTAINTY_FILE
from shmoareg.uncertainty import spread
from torch_threads import one_torch_thread  # noqa: F401 (fixture)


def test_spread_is_the_rms_distance_from_the_mean():
    base = torch.randn(1, 3, 4, 5, 6)
    offset = torch.tensor([3.0, 0.0, 4.0]).view(1, 3, 1, 1, 1)  # |offset| = 5
    result = spread([base, base + offset, base - offset])
    assert result.shape == (1, 1, 4, 5, 6)
    assert torch.allclose(result, torch.full_like(result, 5.0 * np.sqrt(2 / 3)))


def test_members_refine_with_the_smoothness_scaled(monkeypatch):
    """Each member is one optimisation with the smoothness times a factor, from the same start."""
    seen = []

    def fake_optimise(fixed, moving, settings, initial=None, **masks):
        seen.append((settings.smoothness, initial))
        return torch.full((1, 3, 2, 2, 2), settings.smoothness)

    monkeypatch.setattr(uncertainty, "optimise_displacement", fake_optimise)
    start, final = torch.zeros(1, 3, 2, 2, 2), torch.full((1, 3, 2, 2, 2), 2.0)
    image = torch.zeros(1, 1, 2, 2, 2)
    result = uncertainty.ensemble_spread(image, image, OptimisationSettings(smoothness=2.0), final, initial=start)
    assert [weight for weight, _ in seen] == [2.0 * f for f in uncertainty.SMOOTHNESS_FACTORS]
    assert all(initial is start for _, initial in seen)
    expected = spread([final, *(torch.full_like(final, weight) for weight, _ in seen)])
    assert torch.equal(result, expected)


def test_the_map_is_in_millimetres_on_the_fixed_grid(tmp_path, monkeypatch):
    """A spread of 1.5 voxels of a 3 mm working grid must be written as 4.5 mm on the fixed image's grid."""
    t1 = sitk.ReadImage(str(SAMPLE_PAIR["fixed"]))
    paths = brain_case(t1, "t1", seed=8).write(tmp_path)
    monkeypatch.setattr(pipeline, "ensemble_spread",
                        lambda fixed, *args, **kwargs: torch.full_like(fixed, 1.5))
    summary = register(RegistrationRequest(paths["fixed"], paths["moving"], tmp_path / "out", model="none",
                                           refine_steps=2, grid_spacing=3.0, uncertainty=True, device="cpu"))
    written = sitk.ReadImage(str(tmp_path / "out" / UNCERTAINTY_FILE))
    fixed = sitk.ReadImage(paths["fixed"])
    assert written.GetSize() == fixed.GetSize() and written.GetSpacing() == fixed.GetSpacing()
    assert written.GetOrigin() == fixed.GetOrigin() and written.GetDirection() == fixed.GetDirection()
    assert written.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(written), 4.5, rtol=1e-6)
    assert summary["metrics"]["uncertainty_mean_mm"] == pytest.approx(4.5)
    assert "uncertainty" in summary["seconds"] and summary["method"]["uncertainty"]


def test_no_map_unless_asked_for(tmp_path):
    t1 = sitk.ReadImage(str(SAMPLE_PAIR["fixed"]))
    paths = brain_case(t1, "t1", seed=8).write(tmp_path)
    summary = register(RegistrationRequest(paths["fixed"], paths["moving"], tmp_path / "out", model="none",
                                           refine_steps=0, device="cpu"))
    assert not (tmp_path / "out" / UNCERTAINTY_FILE).exists()
    assert summary["method"]["uncertainty"] is None and "uncertainty_mean_mm" not in summary["metrics"]
