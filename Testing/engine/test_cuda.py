"""CUDA checks, run on a GPU machine with ``python -m pytest -m cuda Testing/engine/test_cuda.py``.

bfloat16 autocast of both networks against float32, ``register --device cuda`` on a small
synthetic pair, and a real CUDA out-of-memory error turned into exit code 3 with one line of
advice. Every test skips where torch sees no GPU (``benchmarks/gpu_session.sh`` runs them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from conftest import run_cli
from shmoareg.checkpoints import save_checkpoint
from shmoareg.models import build_model
from shmoareg.protocol import ExitCode
from shmoareg.synthetic import synthetic_pair, to_sitk

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA GPU: torch.cuda.is_available() is False")]

AMP_SHAPE = (64, 64, 64)
SPACING = (1.5, 1.5, 1.5)
DISPLACEMENT_TOLERANCE = 0.1  # relative L2 error of the bfloat16 field (about 0.04 seen with CPU autocast)
GRADIENT_COSINE = 0.98        # cosine similarity of all parameter gradients (0.999 seen with CPU autocast)
OOM_LIMIT_BYTES = 16 * 2**20  # the allocator's cap in the out-of-memory child
OOM_CHILD = ("import sys, torch; torch.cuda.set_per_process_memory_fraction({fraction!r}); "
             "from shmoareg.cli import main; sys.exit(main(sys.argv[1:]))")


def _field_and_gradients(model: torch.nn.Module, fixed: torch.Tensor, moving: torch.Tensor,
                         amp: bool) -> tuple[torch.Tensor, torch.Tensor, set[torch.dtype]]:
    """The displacement, the flattened parameter gradients of a loss on it, and the convolutions' output dtypes."""
    dtypes: set[torch.dtype] = set()
    hooks = [module.register_forward_hook(lambda _m, _i, out: dtypes.add(out.dtype))
             for module in model.modules() if isinstance(module, torch.nn.Conv3d)]
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
        output = model(fixed, moving)
    for hook in hooks:
        hook.remove()
    field = output.displacement.float()
    (field.square().mean() + output.auxiliary_loss.float()).backward()
    gradients = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return field.detach(), gradients, dtypes


@pytest.mark.parametrize("name", ["shmoareg", "unet"])
def test_bfloat16_autocast_matches_float32(name):
    torch.manual_seed(0)
    model = build_model(name).cuda().eval()  # eval: no router noise, so both passes route alike
    pair = synthetic_pair(AMP_SHAPE, seed=5, max_displacement=4.0, num_labels=8)
    fixed, moving = pair.fixed_image.cuda(), pair.moving_image.cuda()
    reference, reference_gradients, _ = _field_and_gradients(model, fixed, moving, amp=False)
    field, gradients, dtypes = _field_and_gradients(model, fixed, moving, amp=True)
    assert torch.bfloat16 in dtypes, "autocast ran no convolution in bfloat16"
    assert torch.isfinite(field).all() and torch.isfinite(gradients).all()
    assert reference.norm() > 0 and reference_gradients.norm() > 0
    assert ((field - reference).norm() / reference.norm()).item() < DISPLACEMENT_TOLERANCE
    cosine = torch.nn.functional.cosine_similarity(gradients, reference_gradients, dim=0).item()
    assert cosine > GRADIENT_COSINE


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> tuple[Path, Path]:
    """A labelled synthetic pair at 1.5 mm and a seeded checkpoint of the default ``shmoareg`` network.

    A checkpoint made here keeps these checks independent of the shipped weights' state.
    """
    folder = tmp_path_factory.mktemp("cuda")
    torch.manual_seed(0)
    weights = save_checkpoint(build_model("shmoareg"), folder / "seeded.safetensors", step=0)
    pair = synthetic_pair((48, 48, 48), seed=3, max_displacement=4.0, num_labels=6)
    images = {"fixed": pair.fixed_image, "moving": pair.moving_image,
              "fixed_seg": pair.fixed_labels, "moving_seg": pair.moving_labels}
    for name, tensor in images.items():
        sitk.WriteImage(to_sitk(tensor, spacing=SPACING), str(folder / f"{name}.nii.gz"))
    return folder, weights


def _register_args(folder: Path, weights: Path, output: str, *extra: str) -> list[str]:
    return ["register", "--fixed", str(folder / "fixed.nii.gz"), "--moving", str(folder / "moving.nii.gz"),
            "--output-dir", str(folder / output), "--model", str(weights), "--device", "cuda",
            "--progress", "none", *extra]


def test_register_on_cuda_improves_dice(case):
    folder, weights = case
    result = run_cli(*_register_args(folder, weights, "registered", "--fixed-seg", str(folder / "fixed_seg.nii.gz"),
                                     "--moving-seg", str(folder / "moving_seg.nii.gz")))
    assert result.returncode == ExitCode.OK, result.stderr
    summary = json.loads((folder / "registered" / "summary.json").read_text())
    assert summary["device"].startswith("cuda")
    assert summary["metrics"]["mean_dice"] > summary["metrics"]["mean_dice_before"] + 0.05
    assert summary["memory"]["gpu_peak_mb"] > 0 and "predict" in summary["seconds"]


def test_cuda_out_of_memory_exits_3_with_one_line_of_advice(case):
    folder, weights = case
    fraction = OOM_LIMIT_BYTES / torch.cuda.get_device_properties(0).total_memory
    # A 0.4 mm grid over the 72 mm pair holds millions of voxels: its first tensor outgrows the 16 MiB cap.
    result = subprocess.run([sys.executable, "-c", OOM_CHILD.format(fraction=fraction),
                             *_register_args(folder, weights, "exhausted", "--grid-spacing", "0.4", "--no-affine")],
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == ExitCode.OUT_OF_MEMORY, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: out of memory") and "--device cpu" in lines[0]
    assert not (folder / "exhausted" / "summary.json").exists()
