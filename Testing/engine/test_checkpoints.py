"""Checkpoints: safetensors + JSON sidecar round trip, safe loading, and clear errors naming the file."""

from __future__ import annotations

import json

import pytest
import torch

from shmoareg import checkpoints
from shmoareg.checkpoints import (load_checkpoint, load_training_state, model_dirs, resolve_model, save_checkpoint,
                                  sha256_of)
from shmoareg.errors import InputError
from shmoareg.models import build_model
from shmoareg.models.registry import model_config
from torch_threads import one_torch_thread  # noqa: F401 - autouse: one torch thread

TINY = {"shmoareg": {"channels": [4, 8, 8], "attention_levels": [3], "head_dim": 8},
        "unet": {"channels": [4, 8, 8]}}


def tiny(name: str = "shmoareg") -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, TINY[name]).eval()


@pytest.fixture
def saved(tmp_path):
    """A saved tiny SHMoAReg checkpoint: (weights path, model)."""
    model = tiny()
    path = save_checkpoint(model, tmp_path / "run" / "model", step=7, metrics={"dice": 0.5},
                           training={"lr": 1e-3}, data={"source": "synthetic"}, seconds=1.5)
    return path, model


def edit_sidecar(weights, change) -> None:
    sidecar = weights.with_suffix(".json")
    content = json.loads(sidecar.read_text())
    change(content)
    sidecar.write_text(json.dumps(content))


@pytest.mark.parametrize("name", ["shmoareg", "unet"])
def test_round_trip_gives_identical_outputs_and_full_metadata(tmp_path, name):
    model = tiny(name)
    generator = torch.Generator().manual_seed(1)
    fixed, moving = torch.rand(2, 1, 1, 32, 32, 32, generator=generator)
    path = save_checkpoint(model, tmp_path / name, step=3, metrics={"dice": 0.7}, training={"seed": 0},
                           data={"source": "synthetic"}, seconds=2.0)
    assert path.name == f"{name}.safetensors" and (tmp_path / f"{name}.json").is_file()
    loaded, metadata = load_checkpoint(tmp_path / f"{name}.json")  # the sidecar path works too
    with torch.no_grad():
        expected, actual = model(fixed, moving).displacement, loaded(fixed, moving).displacement
    assert torch.equal(expected, actual) and expected.abs().max() > 0
    assert not loaded.training
    assert metadata["model"] == {"name": name, "config": model_config(model),
                                 "parameters": sum(p.numel() for p in model.parameters())}
    assert (metadata["step"], metadata["metrics"], metadata["training"], metadata["data"], metadata["seconds"]) == (
        3, {"dice": 0.7}, {"seed": 0}, {"source": "synthetic"}, 2.0)
    assert metadata["weights"]["sha256"] == sha256_of(path)
    assert metadata["hardware"]["device"] == "cpu" and metadata["hardware"]["world_size"] == 1
    assert metadata["shmoareg_version"] and metadata["weights_path"] == str(path)


def test_training_state_is_saved_beside_and_loads_with_weights_only(tmp_path):
    model = tiny()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32)).displacement.sum().backward()
    optimiser.step()
    path = save_checkpoint(model, tmp_path / "latest", training_state={"optimizer": optimiser.state_dict(), "step": 1})
    state = load_training_state(path)
    assert state["step"] == 1
    fresh = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fresh.load_state_dict(state["optimizer"])
    first = next(iter(fresh.state.values()))
    assert torch.equal(first["exp_avg"], next(iter(optimiser.state.values()))["exp_avg"])
    assert load_training_state(save_checkpoint(model, tmp_path / "plain")) is None


def test_missing_weights_and_missing_sidecar_name_the_file(saved, tmp_path):
    path, _ = saved
    with pytest.raises(InputError, match="checkpoint file not found: .*nothing.safetensors"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(InputError, match=f"{path}.* has no sidecar model.json"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_weights_are_refused(saved, damage):
    path, _ = saved
    content = path.read_bytes()
    path.write_bytes(b"\x00not a safetensors file at all" if damage == "garbage" else content[: len(content) // 2])
    with pytest.raises(InputError, match=f"checkpoint {path} is not a valid safetensors file"):
        load_checkpoint(path)


def test_changed_weights_fail_the_sha256_check(saved):
    path, _ = saved
    content = bytearray(path.read_bytes())
    content[-5] ^= 0xFF  # inside the last tensor's data: the header still parses
    path.write_bytes(bytes(content))
    with pytest.raises(InputError, match=f"checkpoint {path} has sha256 .* but model.json records"):
        load_checkpoint(path)


def test_unknown_model_name_in_the_sidecar(saved):
    path, _ = saved
    edit_sidecar(path, lambda content: content["model"].update(name="transmorph"))
    with pytest.raises(InputError, match=f"checkpoint {path}: unknown model 'transmorph'"):
        load_checkpoint(path)


def test_mismatched_config_names_missing_and_misshaped_tensors(saved):
    path, _ = saved
    edit_sidecar(path, lambda content: content["model"]["config"].update(channels=[4, 8, 16]))
    with pytest.raises(InputError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and "tensors of the wrong shape" in message
    assert "(16, " in message and "(8, " in message  # file and model shapes of a mismatching tensor
    edit_sidecar(path, lambda content: content["model"]["config"].update(channels=[4, 8, 8, 8]))
    with pytest.raises(InputError, match=r"missing tensors \(stems\.3\..*"):
        load_checkpoint(path)


def test_resolve_model_loads_paths_and_shipped_weights(saved, tmp_path, monkeypatch):
    path, model = saved
    resolved, metadata = resolve_model(str(path))
    assert metadata["step"] == 7
    shipped = tmp_path / "shipped"
    save_checkpoint(model, shipped / "shmoareg")
    monkeypatch.setenv("SHMOAREG_MODELS_DIR", str(shipped))
    assert model_dirs()[0] == shipped
    resolved, metadata = resolve_model("shmoareg")
    assert metadata["weights_path"] == str(shipped / "shmoareg.safetensors")
    for name, parameter in model.state_dict().items():
        assert torch.equal(resolved.state_dict()[name], parameter)


def test_resolve_model_without_shipped_weights_or_with_a_bad_name(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "model_dirs", lambda: [tmp_path / "empty"])
    with pytest.raises(InputError, match="no shipped weights exist for model 'unet' yet .*shmoareg train"):
        resolve_model("unet")
    with pytest.raises(InputError, match="'voxelmorph3000' is neither a model name .* nor an existing checkpoint"):
        resolve_model("voxelmorph3000")
    with pytest.raises(InputError, match="checkpoint file not found"):
        resolve_model(str(tmp_path / "missing.safetensors"))


def test_resolve_model_reads_a_checkpoint_once_and_hands_out_copies(saved, monkeypatch):
    """Issue 24, 5: the warm engine reads its weights once; a run that changes its model leaves the next one's alone,
    and a checkpoint written again is read again."""
    path, model = saved
    reads = []
    monkeypatch.setattr(checkpoints, "load_checkpoint",
                        lambda *args: reads.append(args) or load_checkpoint(*args))
    first, metadata = resolve_model(str(path))
    with torch.no_grad():
        next(first.parameters()).add_(1.0)  # what a careless run could do to its model
    metadata["step"] = -1
    second, metadata = resolve_model(str(path))
    assert len(reads) == 1 and second is not first and metadata["step"] == 7 and not second.training
    for name, parameter in model.state_dict().items():
        assert torch.equal(second.state_dict()[name], parameter)
    changed = tiny()
    with torch.no_grad():
        next(changed.parameters()).mul_(2.0)
    save_checkpoint(changed, path, step=8)
    third, metadata = resolve_model(str(path))
    assert len(reads) == 2 and metadata["step"] == 8
    assert torch.equal(next(third.parameters()), next(changed.parameters()))
