"""The shipped default weights load offline by name and say how they were trained."""

from shmoareg.checkpoints import resolve_model, sha256_of


def test_shipped_shmoareg_weights_resolve_by_name_with_provenance():
    model, metadata = resolve_model("shmoareg")
    assert model.name == "shmoareg" and not model.training
    assert metadata["step"] > 0 and metadata["data"]["source"] == "synthetic"
    assert metadata["weights"]["sha256"] == sha256_of(metadata["weights_path"])
    assert metadata["metrics"]["validation"]["dice"] > metadata["metrics"]["validation"]["dice_before"]
    assert [e["receptive_field"] for e in model.expert_descriptions()] == [3, 5, 7, 11]
