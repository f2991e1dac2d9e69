"""Model checkpoints: weights as safetensors plus a JSON sidecar, loaded safely and checked.

A checkpoint ``<name>.safetensors`` holds the weights only (no pickle); ``<name>.json`` beside it
records the model name and config, training step, metrics, training config, data provenance,
hardware, seconds, the weights' sha256 and the shmoareg version. Optional training state
(optimiser, gradient scaler, RNG) goes to ``<name>.state.pt``, read back with
``torch.load(weights_only=True)``. Every problem loading one is an :class:`InputError` naming the file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from shmoareg import __version__
from shmoareg.errors import InputError
from shmoareg.jsonio import dumps
from shmoareg.models.registry import MODEL_NAMES, build_model, model_config
from shmoareg.protocol import WEIGHTS_SUFFIX
from shmoareg.resources import WEIGHTS_DIR

SIDECAR_SUFFIX = ".json"
STATE_SUFFIX = ".state.pt"
FORMAT = "shmoareg-checkpoint"
MODELS_DIR_ENV = "SHMOAREG_MODELS_DIR"
_SHOWN_MISMATCHES = 3


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path, Path]:
    """The weights, sidecar and training-state paths of a checkpoint given by any of them or its stem."""
    path = Path(path)
    if path.name.endswith(STATE_SUFFIX):
        path = path.with_name(path.name[: -len(STATE_SUFFIX)])
    elif path.suffix in (WEIGHTS_SUFFIX, SIDECAR_SUFFIX):
        path = path.with_suffix("")
    return (path.with_name(path.name + WEIGHTS_SUFFIX), path.with_name(path.name + SIDECAR_SUFFIX),
            path.with_name(path.name + STATE_SUFFIX))


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_hardware(device: torch.device) -> dict[str, Any]:
    """Where a model was trained: platform, torch, device (GPU name), CPU count, distributed world size."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "torch": torch.__version__, "device": str(device), "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    info["world_size"] = torch.distributed.get_world_size() if distributed else 1
    return info


def _replace_atomically(target: Path, write: Any) -> None:
    """Call ``write(temporary_path)`` and move the result onto ``target`` in one step."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, step: int = 0,
                    metrics: Optional[dict[str, Any]] = None, training: Optional[dict[str, Any]] = None,
                    data: Optional[dict[str, Any]] = None, seconds: Optional[float] = None,
                    training_state: Optional[dict[str, Any]] = None,
                    history: Optional[dict[str, Any]] = None) -> Path:
    """Write ``model``'s weights and sidecar (and ``training_state`` when given); returns the weights path.

    ``training`` is the training config, ``data`` the data provenance, ``seconds`` the training
    time so far, ``history`` the training sessions and validation curve so far;
    ``training_state`` (optimiser, scaler, RNG state) must be made of tensors,
    numbers, strings, lists and dicts so that it loads with ``weights_only=True``.
    """
    weights, sidecar, state = checkpoint_paths(path)
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    _replace_atomically(weights, lambda temporary: save_file(tensors, str(temporary),
                                                             metadata={"format": "pt", "model": model.name}))
    device = next(model.parameters()).device
    metadata = {
        "format": FORMAT,
        "shmoareg_version": __version__,
        "model": {"name": model.name, "config": model_config(model),
                  "parameters": sum(p.numel() for p in model.parameters())},
        "step": int(step),
        "metrics": metrics or {},
        "training": training or {},
        "data": data or {},
        "hardware": describe_hardware(device),
        "seconds": seconds,
        "history": history or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "weights": {"file": weights.name, "sha256": sha256_of(weights), "bytes": weights.stat().st_size},
    }
    _replace_atomically(sidecar, lambda temporary: temporary.write_text(dumps(metadata, indent=2) + "\n"))
    if training_state is not None:
        _replace_atomically(state, lambda temporary: torch.save(training_state, temporary))
    return weights


def _read_sidecar(weights: Path, sidecar: Path) -> dict[str, Any]:
    if not weights.is_file():
        raise InputError(f"checkpoint file not found: {weights} (check the path)")
    if not sidecar.is_file():
        raise InputError(f"checkpoint {weights} has no sidecar {sidecar.name} beside it; it records the model "
                         "name and config, so keep the .json written with the weights next to them")
    try:
        metadata = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"checkpoint sidecar {sidecar} is not valid JSON ({error}); it is corrupt") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise InputError(f"checkpoint sidecar {sidecar} is not a shmoareg checkpoint description "
                         f"(no \"format\": \"{FORMAT}\")")
    for key in ("model", "weights"):
        if not isinstance(metadata.get(key), dict):
            raise InputError(f"checkpoint sidecar {sidecar} lacks its {key!r} section; it is corrupt")
    return metadata


def _read_tensors(weights: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as stream:
            return {key: stream.get_tensor(key) for key in stream.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"checkpoint {weights} is not a valid safetensors file ({str(error).strip()[:120]}); "
                         "it is corrupt or truncated: copy or train it again") from None


def _check_sha256(weights: Path, sidecar: Path, metadata: dict[str, Any]) -> None:
    expected = metadata["weights"].get("sha256")
    actual = sha256_of(weights)
    if actual != expected:
        raise InputError(f"checkpoint {weights} has sha256 {actual[:16]}… but {sidecar.name} records "
                         f"{str(expected)[:16]}…; the weights file was changed or damaged")


def _list(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOWN_MISMATCHES])
    return shown + (f" and {len(items) - _SHOWN_MISMATCHES} more" if len(items) > _SHOWN_MISMATCHES else "")


def _check_tensors(weights: Path, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = []
    missing = [key for key in expected if key not in tensors]
    unexpected = [key for key in tensors if key not in expected]
    shapes = [f"{key} {tuple(tensors[key].shape)} vs {shape}" for key, shape in expected.items()
              if key in tensors and tuple(tensors[key].shape) != shape]
    if missing:
        problems.append(f"{len(missing)} missing tensors ({_list(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors ({_list(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} tensors of the wrong shape (file vs model: {_list(shapes)})")
    if problems:
        raise InputError(f"checkpoint {weights} does not match model {model.name!r} with its recorded config: "
                         + "; ".join(problems))


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model of a checkpoint (in eval mode, on ``device``) and its sidecar metadata.

    ``path`` may name the weights, the sidecar or their common stem. The metadata gains
    ``weights_path``. Raises :class:`InputError` naming the file for every problem.
    """
    weights, sidecar, _ = checkpoint_paths(path)
    metadata = _read_sidecar(weights, sidecar)
    tensors = _read_tensors(weights)
    _check_sha256(weights, sidecar, metadata)
    name, config = metadata["model"].get("name"), metadata["model"].get("config") or {}
    try:
        model = build_model(name, config)
    except InputError as error:
        raise InputError(f"checkpoint {weights}: {error}") from None
    _check_tensors(weights, model, tensors)
    model.load_state_dict(tensors)
    metadata["weights_path"] = str(weights)
    return model.to(device).eval(), metadata


def load_training_state(path: str | os.PathLike) -> Optional[dict[str, Any]]:
    """The training state saved with a checkpoint (``weights_only`` loading), or None if it has none."""
    state = checkpoint_paths(path)[2]
    if not state.is_file():
        return None
    try:
        return torch.load(state, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable state is the same user problem
        raise InputError(f"training state {state} cannot be read safely ({type(error).__name__}: "
                         f"{str(error).strip()[:120]}); it is corrupt or not a shmoareg training state") from None


def model_dirs() -> list[Path]:
    """Folders searched for shipped weights: ``$SHMOAREG_MODELS_DIR``, then the package's own ``weights/``
    (:mod:`shmoareg.resources`)."""
    dirs = [WEIGHTS_DIR]
    if os.environ.get(MODELS_DIR_ENV):
        dirs.insert(0, Path(os.environ[MODELS_DIR_ENV]))
    return dirs


def _looks_like_path(text: str) -> bool:
    return "/" in text or os.sep in text or text.endswith((WEIGHTS_SUFFIX, SIDECAR_SUFFIX)) or Path(text).is_file()


# Checkpoints read by resolve_model in this process, by weights path: the file stamps they were read with and the
# model (on the CPU, in eval mode, never handed out) with its metadata. A process that registers many pairs (``serve``,
# ``batch``) reads and checks each checkpoint once; a checkpoint whose files changed is read again.
_LOADED: dict[Path, tuple[tuple, nn.Module, dict[str, Any]]] = {}


def _stamp(path: Path) -> Optional[tuple[int, int, int]]:
    """What changes when a file is written again: its modification time, size and (when replaced) inode."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size, status.st_ino


def _load_cached(path: str | os.PathLike, device: torch.device | str) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_checkpoint`, read once per version of the checkpoint's files; each call gets its own copy of
    the model and metadata, so a run that moves, adapts or trains its model leaves the next run's untouched."""
    weights, sidecar, _ = checkpoint_paths(path)
    stamps = (_stamp(weights), _stamp(sidecar))
    if None in stamps:
        return load_checkpoint(path, device)  # its error names the missing file
    key = weights.resolve()
    if key not in _LOADED or _LOADED[key][0] != stamps:
        _LOADED[key] = (stamps, *load_checkpoint(weights, "cpu"))
    _, model, metadata = _LOADED[key]
    return copy.deepcopy(model).to(device), copy.deepcopy(metadata)


def resolve_model(name_or_path: str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A trained model from the shipped weights of a model name, or from a checkpoint path (read once per process
    while its files are unchanged; every call gets its own copy)."""
    if name_or_path not in MODEL_NAMES:
        if _looks_like_path(name_or_path):
            return _load_cached(name_or_path, device)
        raise InputError(f"--model {name_or_path!r} is neither a model name ({', '.join(MODEL_NAMES)}) "
                         "nor an existing checkpoint file")
    searched = model_dirs()
    for folder in searched:
        candidate = folder / f"{name_or_path}{WEIGHTS_SUFFIX}"
        if candidate.is_file():
            return _load_cached(candidate, device)
    raise InputError(f"no shipped weights exist for model {name_or_path!r} yet (looked for "
                     f"{name_or_path}{WEIGHTS_SUFFIX} in {', '.join(str(d) for d in searched)}); train one with "
                     "`shmoareg train --config C.yaml` and pass its checkpoint path (e.g. "
                     "<output_dir>/checkpoints/best.safetensors) as --model")
