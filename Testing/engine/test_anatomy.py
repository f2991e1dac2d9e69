"""Training pairs of two different real subjects (issue 23, point 3): shmoareg.training.anatomy.

The subjects here are the shipped 2 mm MNI152 and Colin27 scans with labels made from their tissue classes in
Mindboggle's and SynthSeg's numbering, so the tests run without ../shared/data.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from shmoareg.errors import InputError
from shmoareg.known_warps import tissue_labels
from shmoareg.resources import SAMPLE_PAIR
from shmoareg.training.anatomy import (AnatomySource, Window, cache_path, coarse_labels, dice_labels, load_subject,
                                       make_cache, reference_image, t1_like)
from shmoareg.training.config import AnatomySpec, DataSpec, TrainingConfig
from shmoareg.training.data import TRAIN, VALIDATION, TrainingData
from shmoareg.training.trainer import train
from torch_threads import one_torch_thread  # noqa: F401 - autouse: one torch thread

SHAPE = (32, 32, 32)
STILL = dict(permute_axes=False, rotation_degrees=0.0, centre_jitter_mm=0.0, residual_rotation_degrees=0.0,
             residual_scaling=0.0, residual_translation_mm=0.0, max_displacement=0.0, spacing=(2.0, 2.0))


def _mindboggle_labels(scan: sitk.Image) -> sitk.Image:
    """Tissue classes as Mindboggle labels them: fluid 4, cortex as DKT31 parcels 1002/1003 (left, by x) and
    2002 (right), white matter unlabelled (0)."""
    classes = sitk.GetArrayFromImage(tissue_labels(scan))
    x = np.arange(classes.shape[2])[None, None, :]
    cortex = np.where(x < classes.shape[2] // 4, 1003, np.where(x < classes.shape[2] // 2, 1002, 2002))
    labels = np.select([classes == 1, classes == 2], [4, cortex], 0).astype(np.int32)
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(scan)
    return image


def _synthseg_labels(scan: sitk.Image) -> sitk.Image:
    """Tissue classes as SynthSeg labels them (fluid 24, cortex 3, white matter 2) with a 2-voxel shell of an
    extra-cerebral label (507) around the brain."""
    classes = sitk.GetArrayFromImage(tissue_labels(scan))
    shell = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray((classes > 0).astype(np.uint8)), [2] * 3))
    labels = np.select([classes == 1, classes == 2, classes == 3, shell > 0], [24, 3, 2, 507], 0).astype(np.int32)
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(scan)
    return image


@pytest.fixture(scope="module")
def subjects(tmp_path_factory) -> dict[str, Path]:
    """Two scanned subjects (folders: MNI152 and Colin27) and one label map without a scan (Colin27)."""
    root = tmp_path_factory.mktemp("anatomy")
    made = {}
    for name, key in (("mni", "fixed"), ("colin", "moving")):
        scan = sitk.ReadImage(str(SAMPLE_PAIR[key]))
        folder = root / name
        folder.mkdir()
        sitk.WriteImage(sitk.Cast(scan, sitk.sitkInt16), str(folder / "t1_brain.nii.gz"))
        sitk.WriteImage(_mindboggle_labels(scan), str(folder / "labels.nii.gz"))
        made[name] = folder
    made["synthseg"] = root / "synthseg.nii.gz"
    sitk.WriteImage(_synthseg_labels(sitk.ReadImage(str(SAMPLE_PAIR["moving"]))), str(made["synthseg"]))
    made["cache"] = root / "cache"
    return made


def _spec(subjects: dict[str, Path], names: tuple[str, ...], **anatomy) -> DataSpec:
    spec = AnatomySpec(subjects=tuple(str(subjects[name]) for name in names),
                       validation_subjects=(str(subjects["mni"]), str(subjects["colin"])),
                       cache_dir=str(subjects["cache"]), **anatomy)
    return DataSpec(source="anatomy", shape=SHAPE, anatomy=spec)


def test_the_reference_scan_aligns_onto_itself_and_the_alignment_is_cached(subjects):
    reference = reference_image()
    subject = load_subject(subjects["mni"], reference, subjects["cache"])
    original = sitk.GetArrayFromImage(sitk.ReadImage(str(subjects["mni"] / "labels.nii.gz")))
    labelled = original > 0
    assert subject.labels.shape == original.shape
    assert (subject.labels[labelled] == original[labelled]).mean() > 0.97  # its affine to itself is the identity
    assert len(list(subjects["cache"].glob("*.npz"))) >= 1
    again = load_subject(subjects["mni"], reference, subjects["cache"])
    assert np.array_equal(again.labels, subject.labels) and again.sha256 == subject.sha256


def test_the_cache_file_names_its_subject_and_loads_as_the_source_files_do(subjects, tmp_path):
    reference, cache = reference_image(), subjects["cache"]
    entries = {name: cache_path(subjects[name], cache) for name in ("mni", "colin", "synthseg")}
    assert entries["mni"].name.startswith(f"{subjects['mni'].parent.name}_mni-") and entries["mni"].suffix == ".npz"
    assert entries["synthseg"].name.startswith("synthseg-")
    for name in ("mni", "synthseg"):  # with a scan and without
        aligned = load_subject(subjects[name], reference, cache)
        cached = load_subject(entries[name], reference, tmp_path / "unused")
        assert (cached.name, cached.sha256) == (aligned.name, aligned.sha256)
        assert np.array_equal(cached.labels, aligned.labels)
        assert (cached.image is None and aligned.image is None) or np.array_equal(cached.image, aligned.image)
    assert not (tmp_path / "unused").exists()
    spec = _spec(subjects, ("mni", "colin"))
    listed = tuple(str(entries[name]) for name in ("mni", "colin"))
    from_cache = dataclasses.replace(spec, anatomy=dataclasses.replace(spec.anatomy, subjects=listed,
                                                                       validation_subjects=listed))
    for stream in (TRAIN, VALIDATION):
        expected = AnatomySource(spec, seed=4).sample(stream, 0, 1)
        got = AnatomySource(from_cache, seed=4).sample(stream, 0, 1)
        assert torch.equal(expected.fixed, got.fixed) and torch.equal(expected.moving_labels, got.moving_labels)


def test_a_cache_file_of_another_version_is_refused_and_make_cache_keeps_only_the_current_files(subjects, tmp_path):
    stale = tmp_path / "old-0123.npz"
    np.savez_compressed(stale, name="old", labels=np.zeros((2, 2, 2), np.int16), sha256="0" * 64)
    with pytest.raises(InputError, match="version unversioned, not .*--anatomy-cache"):
        load_subject(stale, reference_image(), tmp_path)
    spec = _spec(subjects, ("mni", "colin", "synthseg")).anatomy
    earlier = [subjects["cache"] / name for name in ("0123456789abcdef01234567.pt", "synthseg-0123.npz")]
    for path in earlier:
        path.write_bytes(b"an earlier version")
    files = make_cache(spec)
    assert sorted(subjects["cache"].iterdir()) == files
    assert [path.name.split("-")[0] for path in files] == sorted(f"{subjects['mni'].parent.name}_{name}"
                                                                for name in ("mni", "colin")) + ["synthseg"]


def test_pairs_are_made_on_the_sources_device_and_batched(subjects):
    device = torch.device("cpu")  # a GPU is checked by benchmarks/gpu_session.sh; here the argument's path
    data = TrainingData(_spec(subjects, ("colin", "synthseg")), seed=1, device=device)
    assert all(labels.device == device for labels in data.source._labels)
    batch = data.batch(0, 3)
    tensors = [batch.fixed, batch.moving, batch.fixed_labels, batch.moving_labels]
    assert all(tensor.shape == (3, 1, *SHAPE) and tensor.device == device for tensor in tensors)
    validation = data.validation(1)[0]
    assert all(tensor.device == device for tensor in (validation.fixed, validation.moving, validation.fixed_labels))


def test_a_window_samples_the_reference_volume_in_the_orientation_asked():
    volume = torch.arange(4 * 5 * 6, dtype=torch.float32).view(1, 1, 4, 5, 6)
    centre = torch.tensor([2.5, 2.0, 1.5], dtype=torch.float64)  # x y z: the middle of a 6 x 5 x 4 volume
    plain = Window(centre, torch.eye(3, dtype=torch.float64), (4, 5, 6))
    sampled = torch.nn.functional.grid_sample(volume, plain.grid((4, 5, 6)), mode="nearest", align_corners=True)
    assert torch.equal(sampled, volume)
    mirrored = Window(centre, torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)), (4, 5, 6))
    sampled = torch.nn.functional.grid_sample(volume, mirrored.grid((4, 5, 6)), mode="nearest", align_corners=True)
    assert torch.equal(sampled, volume.flip(4))
    swapped = Window(centre, torch.tensor([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]], dtype=torch.float64), (6, 5, 4))
    sampled = torch.nn.functional.grid_sample(volume, swapped.grid((4, 5, 6)), mode="nearest", align_corners=True)
    assert torch.equal(sampled, volume.transpose(2, 4))  # window x runs along the volume's z and back


def test_pairs_are_two_different_subjects_reproducible_by_index(subjects):
    source = AnatomySource(_spec(subjects, ("mni", "colin"), real_image_share=1.0, gamma=0.0, **STILL), seed=3)
    scans = {name: torch.from_numpy(load_subject(subjects[name], reference_image(), subjects["cache"]).image
                                    .astype(np.float32)) for name in ("mni", "colin")}
    window = source._window(2.0, torch.eye(3, dtype=torch.float64), source.centre)
    expected = {name: torch.nn.functional.grid_sample(scan[None, None], window.grid(tuple(scan.shape)),
                                                      align_corners=True) for name, scan in scans.items()}
    seen = set()
    for index in range(6):
        sample = source.sample(TRAIN, 0, index)
        fixed = min(expected, key=lambda name: float((expected[name] - sample.fixed).abs().max()))
        moving = min(expected, key=lambda name: float((expected[name] - sample.moving).abs().max()))
        assert float((expected[fixed] - sample.fixed).abs().max()) < 1e-5
        assert float((expected[moving] - sample.moving).abs().max()) < 1e-5
        assert fixed != moving
        seen.add(fixed)
        again = source.sample(TRAIN, 0, index)
        assert torch.equal(again.fixed, sample.fixed) and torch.equal(again.moving_labels, sample.moving_labels)
    assert seen == {"mni", "colin"}  # either subject can be the fixed one


def test_dice_labels_keep_brain_labels_both_subjects_have_and_merge_parcels_across_labellings():
    fixed = torch.tensor([0, 1002, 1003, 2002, 41, 17, 507, 630])
    moving = torch.tensor([0, 3, 42, 2, 2, 17, 507, 0])
    kept_fixed, kept_moving = dice_labels(fixed, moving, parcels=False)
    assert kept_fixed.tolist() == [0, 3, 3, 42, 2, 17, 0, 0]  # 507 is outside the brain; 630 only in one map
    assert kept_moving.tolist() == [0, 3, 42, 2, 2, 17, 0, 0]
    fine_fixed, fine_moving = dice_labels(torch.tensor([1002, 1003, 630, 4]), torch.tensor([1002, 1005, 630, 0]),
                                          parcels=True)
    assert fine_fixed.tolist() == [1002, 0, 630, 0] and fine_moving.tolist() == [1002, 0, 630, 0]
    assert coarse_labels(torch.tensor([1035, 2001, 41, 46])).tolist() == [3, 42, 2, 46]


def test_t1_like_orders_the_tissues_as_a_t1_scan_does():
    values = t1_like(np.array([2, 1003, 3, 4, 24, 17, 507, 0]))
    white, parcel, cortex, ventricle, csf, hippocampus, skull, background = values
    assert white > cortex == parcel == hippocampus > ventricle == csf > background == skull == 0


def test_rendered_pairs_give_one_intensity_per_tissue_and_strip_the_head(subjects):
    spec = _spec(subjects, ("colin", "synthseg"), same_contrast_share=1.0, strip_share=1.0, noise_std=0.0,
                 blur_sigma=0.0, bias_strength=0.0, gamma=0.0, **STILL)
    source = AnatomySource(spec, seed=0)
    window = source._window(6.0, torch.eye(3, dtype=torch.float64), source.centre)  # the whole head
    colin, synthseg = (torch.nn.functional.grid_sample(volume, window.grid(tuple(volume.shape[2:])), mode="nearest",
                                                       align_corners=True).long() for volume in source._labels)
    for seed in range(3):
        colin_image, synthseg_image = source._render(colin, synthseg, torch.Generator().manual_seed(seed))
        left = colin_image[(colin == 1002) | (colin == 1003)]
        assert left.numel() > 0 and float(left.max() - left.min()) < 1e-6  # the parcels are rendered as one cortex
        # one contrast for both (up to each image's min-max scaling): cortex and white matter in the same order
        order = [float(image[labels == 3].mean() - image[labels == 2].mean())
                 for image, labels in ((colin_image, coarse_labels(colin)), (synthseg_image, synthseg))]
        assert order[0] * order[1] > 0
        shell, outside = synthseg_image[synthseg == 507], synthseg_image[synthseg == 0]
        assert shell.numel() > 0 and float((shell - outside[0]).abs().max()) < 1e-6  # the head is stripped


def test_validation_pairs_are_the_real_scans_and_manual_labels_in_a_ring(subjects):
    source = AnatomySource(_spec(subjects, ("mni", "colin")), seed=0)
    first, second = source.sample(VALIDATION, 0, 0), source.sample(VALIDATION, 0, 1)
    assert torch.equal(first.fixed, second.moving) and torch.equal(first.moving, second.fixed)
    assert 2 not in torch.unique(first.fixed_labels).tolist()  # no white matter: the manual labels have none
    assert {1002, 2002} <= set(torch.unique(first.fixed_labels).tolist())
    assert torch.equal(source.sample(VALIDATION, 0, 0).fixed, first.fixed)


def test_missing_subjects_are_a_clear_error(subjects, tmp_path):
    spec = DataSpec(source="anatomy", shape=SHAPE,
                    anatomy=AnatomySpec(subjects=(str(tmp_path / "nowhere" / "*.nii.gz"),), cache_dir=str(tmp_path)))
    with pytest.raises(InputError, match=r"no file matches .*shared/data"):
        AnatomySource(spec, seed=0)
    with pytest.raises(InputError, match="fewer than two subjects"):
        AnatomySource(_spec(subjects, ("mni",)), seed=0)
    with pytest.raises(InputError, match="data.anatomy.subjects is required"):
        TrainingConfig.from_dict({"data": {"source": "anatomy"}})


def test_training_on_anatomy_records_every_subject_in_the_checkpoint(subjects, tmp_path):
    data = _spec(subjects, ("mni", "colin", "synthseg"))
    config = TrainingConfig.from_dict({
        "model": {"name": "unet", "config": {"channels": [4, 8]}}, "loss": {"dice_weight": 1.0},
        "optimiser": {"steps": 2}, "validation": {"every": 2, "pairs": 2}, "checkpoint_every": 2,
        "output_dir": str(tmp_path / "run"), "device": "cpu"})
    config = dataclasses.replace(config, data=data)
    result = train(config, log=lambda message: None)
    assert result.step == 2 and all(np.isfinite(result.losses))
    sidecar = json.loads(next((tmp_path / "run" / "checkpoints").glob("latest*.json")).read_text())
    described = sidecar["data"]
    assert described["source"] == "anatomy"
    assert [Path(s["path"]).name for s in described["training_subjects"]] == ["mni", "colin", "synthseg.nii.gz"]
    assert all(len(s["sha256"]) == 64 for s in described["training_subjects"])
    assert "dice" in result.validations[-1]
