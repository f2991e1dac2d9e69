"""Losses, intensity normalisation, the affine helpers and the staged output folder."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from shmoareg.affine import as_affine, check_overlap, initialise_affine
from shmoareg.errors import InputError
from shmoareg.intensity import detect_modality, normalise
from shmoareg.losses import LocalNCC, bending_energy, diffusion
from shmoareg.outputs import StagedOutputs
from shmoareg.progress import Progress
from shmoareg.spatial import identity_grid
from phantoms import phantom_image


@pytest.mark.parametrize("window", [3, 5, 9])
def test_local_ncc_equals_monai(window):
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(1, 1, 12, 14, 16, generator=generator)
    b = a + 0.4 * torch.rand(a.shape, generator=generator)
    b[..., :4] = 0.5  # a flat region exercises the variance floor
    reference = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=window)(a, b)
    assert LocalNCC(window)(a, b).item() == pytest.approx(reference.item(), abs=1e-5)


def test_local_ncc_is_minus_one_for_affine_related_images_and_uses_the_weight():
    a = torch.rand(1, 1, 10, 10, 10)
    interior = torch.zeros(1, 1, 10, 10, 10)
    interior[..., 1:-1, 1:-1, 1:-1] = 1.0  # border windows see the zero padding
    assert LocalNCC(3)(a, 2 * a + 1, interior).item() == pytest.approx(-1.0, abs=1e-3)
    noise = torch.rand(1, 1, 10, 10, 10)
    weight = torch.zeros(1, 1, 10, 10, 10)
    weight[..., 3:7, 3:7, 3:7] = 1.0
    mixed = torch.where(weight > 0, 2 * a + 1, noise)
    # inside the weighted region (away from its border) the images are affinely related
    inner = torch.zeros_like(weight)
    inner[..., 4:6, 4:6, 4:6] = 1.0
    assert LocalNCC(3)(mixed, a, inner).item() == pytest.approx(-1.0, abs=1e-3)
    assert LocalNCC(3)(mixed, a).item() > -0.9


def test_smoothness_of_constant_linear_and_quadratic_fields():
    grid = identity_grid((8, 8, 8))
    constant = torch.ones(1, 3, 8, 8, 8)
    linear = 0.5 * grid
    quadratic = 0.1 * grid ** 2
    assert diffusion(constant).item() == 0.0 and bending_energy(constant).item() == 0.0
    # each channel changes by 0.5 along one axis: 1/3 of the squared differences are 0.25, averaged over 3 axes
    assert diffusion(linear).item() == pytest.approx(0.25 / 3, rel=1e-5)
    assert bending_energy(linear).item() == pytest.approx(0.0, abs=1e-6)
    # second difference of 0.1 x^2 is 0.2 along its own axis: non-zero in the 3 pure pairs of the 9
    # derivative pairs, for 1 of 3 channels each: (3 * 0.04 / 3) / 9
    assert bending_energy(quadratic).item() == pytest.approx(0.04 / 9, rel=1e-4)


def image(array: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(array.astype(np.float32))


def test_normalisation_modes():
    rng = np.random.default_rng(0)
    mr = rng.gamma(2.0, 100.0, (10, 10, 10))
    normalised = sitk.GetArrayFromImage(normalise(image(mr)))
    assert normalised.min() == 0.0 and normalised.max() == 1.0
    assert 0.9 < np.mean(normalised < 1.0) < 1.0  # only the top ~0.5% saturates
    ct = np.full((10, 10, 10), -1000.0)
    ct[3:7, 3:7, 3:7] = 40.0
    ct[5, 5, 5] = 1200.0
    assert detect_modality(image(ct)) == "ct" and detect_modality(image(mr)) == "mr"
    ct_normalised = sitk.GetArrayFromImage(normalise(image(ct)))
    assert ct_normalised[0, 0, 0] == 0.0 and ct_normalised[4, 4, 4] == pytest.approx(0.52)
    windowed = sitk.GetArrayFromImage(normalise(image(ct), window=(0.0, 80.0)))
    assert windowed[4, 4, 4] == pytest.approx(0.5)
    with pytest.raises(InputError, match="window"):
        normalise(image(ct), window=(5.0, 5.0))


def test_as_affine_flattens_a_composite():
    first = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, 0.2, -0.1, (1.0, 0.0, 2.0))
    second = sitk.ScaleTransform(3, (1.1, 0.9, 1.2))
    composite = sitk.CompositeTransform([second, first])
    flat = as_affine(composite)
    for point in [(0.0, 0.0, 0.0), (10.0, -4.0, 7.0)]:
        assert np.allclose(flat.TransformPoint(point), composite.TransformPoint(point))


def test_check_overlap_accepts_overlap_and_refuses_none():
    mask = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    mask[2:8, 2:8, 2:8] = 1
    assert check_overlap(mask, mask, sitk.Transform()) == pytest.approx(1.0)
    with pytest.raises(InputError, match="overlap"):
        check_overlap(mask, mask, sitk.TranslationTransform(3, (50.0, 0.0, 0.0)))


def test_staged_outputs_publish_everything_and_discard_leaves_nothing(tmp_path):
    (tmp_path / "summary.json").write_text("old")
    staged = StagedOutputs(tmp_path)
    staged.path("a.txt").write_text("a")
    staged.write_json("summary.json", {"value": np.float32(1.5)})
    published = staged.publish()
    assert set(published) == {"a.txt", "summary.json"}
    assert json.loads((tmp_path / "summary.json").read_text()) == {"value": 1.5}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    discarded = StagedOutputs(tmp_path)
    discarded.path("b.txt").write_text("b")
    discarded.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "summary.json"]


def test_progress_fraction_is_overall_and_monotonic(capsys):
    progress = Progress("json")
    with progress.stage("load"):
        progress.update(0.5, "half")
    with progress.stage("register"):
        progress.update(0.5, "half")
        progress.update(0.2, "going back is ignored")
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    fractions = [r["fraction"] for r in records]
    assert fractions == sorted(fractions)
    assert records[1]["fraction"] == pytest.approx(0.025)
    assert records[4]["fraction"] == pytest.approx(0.05 + 0.25)
    assert set(progress.seconds) == {"load", "register"}


def test_the_affine_of_an_image_and_itself_is_the_identity():
    """Mattes MI's Parzen bias pulled an aligned pair off the identity (determinant 0.994 on MNI152)."""
    image = phantom_image(size=(48, 44, 40), spacing=(1.5, 1.5, 1.5), origin=(-36.0, -33.0, -30.0))
    affine = initialise_affine(image, image)
    assert np.allclose(affine.GetMatrix(), np.eye(3).ravel(), atol=1e-12)
    assert np.allclose(affine.GetTranslation(), 0.0, atol=1e-12)
