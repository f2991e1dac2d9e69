"""The shipped weights load offline by name, say how they were trained, and are the default model."""

import re

import pytest

from shmoareg.checkpoints import resolve_model, sha256_of
from shmoareg.protocol import DEFAULT_MODEL


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["shmoareg", "unet"])
def test_shipped_weights_resolve_by_name_with_provenance(name):
    model, metadata = resolve_model(name)
    assert model.name == name and not model.training
    assert metadata["step"] > 0 and metadata["data"]["source"] in ("synthetic", "anatomy")
    if metadata["data"]["source"] == "anatomy":  # real subjects: named with their files' hashes, never a validation one
        trained = [subject["path"] for subject in metadata["data"]["training_subjects"]]
        validated = {subject["path"] for subject in metadata["data"]["validation_subject_files"]}
        assert trained and all(len(s["sha256"]) == 64 for s in metadata["data"]["training_subjects"])
        assert validated and not validated & set(trained)
        assert not [path for path in trained if re.search(r"oasis-trt-20/(1[1-9]|20)$", path)]
    assert metadata["weights"]["sha256"] == sha256_of(metadata["weights_path"])
    assert metadata["seconds"] > 0 and metadata["hardware"]["device"] in ("cpu", "cuda")
    assert metadata["metrics"]["validation"]["dice"] > metadata["metrics"]["validation"]["dice_before"]


def test_the_default_model_is_the_shipped_shmoareg_and_the_baseline_has_matched_size():
    assert DEFAULT_MODEL == "shmoareg"
    shmoareg, _ = resolve_model(DEFAULT_MODEL)
    unet, _ = resolve_model("unet")
    assert [e["receptive_field"] for e in shmoareg.expert_descriptions()] == [3, 5, 7, 11]
    assert abs(parameters(unet) - parameters(shmoareg)) < 0.05 * parameters(shmoareg)
