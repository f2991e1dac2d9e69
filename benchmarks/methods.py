"""The registration methods compared by ``benchmarks/compare.py``.

Each method is one timed child process that registers ``moving`` onto ``fixed`` and leaves a
transform in its output folder (resampling convention: fixed-space points to moving-space
points). ``compare.py`` turns every transform into a displacement field on the fixed grid and
scores all of them the same way.

Two methods run inside this file when it is executed as a script, so that each has its own
process (wall time and peak memory are per process):

    python benchmarks/methods.py sitk-demons FIXED MOVING OUTPUT_DIR
    python benchmarks/methods.py ants-syn FIXED MOVING OUTPUT_DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk

from shmoareg.method import RegistrationMethod
from shmoareg.protocol import DEFAULT_MODEL, DEFAULT_REFINE_STEPS
from shmoareg.resources import shipped_models

THREADS = 2
DEMONS_ITERATIONS = 50
DEMONS_SMOOTHING = 1.5

ELASTIX_COMMON = {
    "FixedInternalImagePixelType": "float", "MovingInternalImagePixelType": "float",
    "FixedImageDimension": 3, "MovingImageDimension": 3, "UseDirectionCosines": "true",
    "Registration": "MultiResolutionRegistration", "Interpolator": "LinearInterpolator",
    "ResampleInterpolator": "FinalBSplineInterpolator", "Resampler": "DefaultResampler",
    "FixedImagePyramid": "FixedSmoothingImagePyramid", "MovingImagePyramid": "MovingSmoothingImagePyramid",
    "Optimizer": "AdaptiveStochasticGradientDescent", "Metric": "AdvancedMattesMutualInformation",
    "NumberOfHistogramBins": 32, "ImageSampler": "RandomCoordinate", "NumberOfSpatialSamples": 2048,
    "NewSamplesEveryIteration": "true", "HowToCombineTransforms": "Compose",
    "NumberOfResolutions": 3, "FinalBSplineInterpolationOrder": 3, "DefaultPixelValue": 0,
    "WriteResultImage": "false", "ResultImageFormat": "nii.gz",
}
ELASTIX_STAGES = {
    "affine": {"Transform": "AffineTransform", "AutomaticTransformInitialization": "true",
               "AutomaticScalesEstimation": "true", "MaximumNumberOfIterations": 250},
    "bspline": {"Transform": "BSplineTransform", "FinalGridSpacingInPhysicalUnits": 10.0,
                "MaximumNumberOfIterations": 500},
}


def _shmoareg(fixed: Path, moving: Path, output: Path, method: RegistrationMethod,
              device: str = "cpu") -> list[str]:
    """``shmoareg register`` on ``device`` with ``method``, defaults otherwise."""
    return [sys.executable, "-m", "shmoareg", "register", "--fixed", str(fixed), "--moving", str(moving),
            "--output-dir", str(output), "--device", device, "--progress", "none", *method.arguments()]


def _this_script(method: str, fixed: Path, moving: Path, output: Path) -> list[str]:
    """A method implemented below, in its own process."""
    return [sys.executable, str(Path(__file__).resolve()), method, str(fixed), str(moving), str(output)]


def _elastix(fixed: Path, moving: Path, output: Path) -> list[str]:
    """The elastix command line for affine then B-spline; writes the two parameter files first."""
    output.mkdir(parents=True, exist_ok=True)
    command = ["elastix", "-f", str(fixed), "-m", str(moving), "-out", str(output), "-threads", str(THREADS)]
    for stage, parameters in ELASTIX_STAGES.items():
        path = output / f"{stage}.txt"
        path.write_text(_elastix_parameter_text({**ELASTIX_COMMON, **parameters}))
        command += ["-p", str(path)]
    return command


def _elastix_parameter_text(parameters: dict[str, object]) -> str:
    """elastix's ``(Name value)`` parameter-file syntax; strings are quoted."""
    lines = []
    for name, value in parameters.items():
        text = f'"{value}"' if isinstance(value, str) else str(value)
        lines.append(f"({name} {text})")
    return "\n".join(lines) + "\n"


# The other networks compared, with and without refinement: those with shipped weights (this file stays free
# of torch, whose import would slow the timed children).
OTHER_NETWORKS = [name for name in shipped_models() if name != DEFAULT_MODEL]
NO_REFINE_SUFFIX = "-no-refine"
# The optimisation without a network given this many times its default CPU steps: what more steps alone would buy.
MODEL_NONE_STEPS_FACTOR = 3
MODEL_NONE_3X = f"shmoareg-model-none-{MODEL_NONE_STEPS_FACTOR}x"

NETWORK_METHODS = {
    "shmoareg": RegistrationMethod.network_then_refinement(),
    "affine-only": RegistrationMethod.affine_alone(),
    "shmoareg" + NO_REFINE_SUFFIX: RegistrationMethod.network_alone(),
    "shmoareg-model-none": RegistrationMethod.refinement_alone(),
    MODEL_NONE_3X: RegistrationMethod.refinement_alone(MODEL_NONE_STEPS_FACTOR * DEFAULT_REFINE_STEPS["cpu"]),
    **{name: RegistrationMethod.network_then_refinement(name) for name in OTHER_NETWORKS},
    **{name + NO_REFINE_SUFFIX: RegistrationMethod.network_alone(name) for name in OTHER_NETWORKS},
}
COMMANDS = {
    **{label: (lambda f, m, o, method=method: _shmoareg(f, m, o, method)) for label, method in NETWORK_METHODS.items()},
    "shmoareg-gpu": lambda f, m, o: _shmoareg(f, m, o, RegistrationMethod(), device="cuda"),
    "sitk-demons": lambda f, m, o: _this_script("sitk-demons", f, m, o),
    "elastix": _elastix,
    "ants-syn": lambda f, m, o: _this_script("ants-syn", f, m, o),
}


def unavailable(method: str) -> str | None:
    """Why ``method`` cannot run on this machine, or None when it can."""
    if method == "shmoareg-gpu":
        import torch  # here, not at the top: the timed demons and ANTs processes run this file

        if not torch.cuda.is_available():
            return "no CUDA GPU on this machine"
    if method == "elastix" and not (shutil.which("elastix") and shutil.which("transformix")):
        return "elastix/transformix not on PATH (Debian package elastix)"
    if method == "ants-syn" and importlib.util.find_spec("ants") is None:
        return "antspyx not installed"
    return None


def command(method: str, fixed: Path, moving: Path, output: Path) -> list[str]:
    """The timed command line of ``method``."""
    return COMMANDS[method](fixed, moving, output)


def load_transform(method: str, output: Path) -> sitk.Transform:
    """The fixed-to-moving transform a finished ``method`` left in ``output``."""
    if method == "elastix":
        return _elastix_field_transform(output)
    return sitk.ReadTransform(str(output / "transform.h5"))


def _elastix_field_transform(output: Path) -> sitk.Transform:
    """transformix's dense deformation field of the final elastix transform, as an ITK transform."""
    subprocess.run(["transformix", "-def", "all", "-out", str(output), "-threads", str(THREADS),
                    "-tp", str(output / "TransformParameters.1.txt")], check=True, capture_output=True)
    field = sitk.ReadImage(str(next(output.glob("deformationField.*"))), sitk.sitkVectorFloat64)
    return sitk.DisplacementFieldTransform(field)


def _normalised(image: sitk.Image) -> sitk.Image:
    """Float32 copy scaled to [0, 1]."""
    return sitk.RescaleIntensity(sitk.Cast(image, sitk.sitkFloat32), 0.0, 1.0)


def _configured_method() -> sitk.ImageRegistrationMethod:
    """Mattes MI (32 bins, 20 % random samples), linear interpolation, 3-level pyramid 4/2/1."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.2, seed=1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    return method


def sitk_affine(fixed: sitk.Image, moving: sitk.Image) -> sitk.AffineTransform:
    """Moments-centred affine, Mattes MI, regular-step gradient descent with physical-shift scales."""
    method = _configured_method()
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-4, numberOfIterations=200)
    method.SetOptimizerScalesFromPhysicalShift()
    affine = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                               sitk.CenteredTransformInitializerFilter.MOMENTS)
    method.SetInitialTransform(affine, inPlace=True)
    method.Execute(fixed, moving)
    return affine


def _level(image: sitk.Image, shrink: int) -> sitk.Image:
    """The image Gaussian-smoothed (sigma = shrink/2 voxels) and subsampled by ``shrink``; itself at 1."""
    if shrink == 1:
        return image
    sigma = [shrink / 2 * spacing for spacing in image.GetSpacing()]
    return sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, sigma), [shrink] * 3)


def _demons_field(fixed: sitk.Image, moving: sitk.Image) -> sitk.Image:
    """Multi-resolution (4/2/1) fast symmetric-forces demons; the field of each level starts the next."""
    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(DEMONS_ITERATIONS)
    demons.SetStandardDeviations(DEMONS_SMOOTHING)
    field = None
    for shrink in (4, 2, 1):
        level_fixed, level_moving = _level(fixed, shrink), _level(moving, shrink)
        if field is None:
            start = sitk.Image(level_fixed.GetSize(), sitk.sitkVectorFloat64)
            start.CopyInformation(level_fixed)
        else:
            start = sitk.Resample(field, level_fixed, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
        field = demons.Execute(level_fixed, level_moving, start)
    return field


def sitk_demons(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """Affine, then demons between the fixed image and the histogram-matched, affinely resampled moving image."""
    affine = sitk_affine(fixed, moving)
    resampled = sitk.Resample(moving, fixed, affine, sitk.sitkLinear, 0.0)
    matched = sitk.HistogramMatching(resampled, fixed, numberOfHistogramLevels=256, numberOfMatchPoints=7)
    field = sitk.DisplacementFieldTransform(_demons_field(fixed, matched))
    return sitk.CompositeTransform([affine, field])


def ants_syn(fixed_path: Path, moving_path: Path, output: Path) -> sitk.Transform:
    """antspyx ``registration(type_of_transform='SyN')`` with its defaults, as one composite transform."""
    import ants

    result = ants.registration(ants.image_read(str(fixed_path)), ants.image_read(str(moving_path)),
                               type_of_transform="SyN", outprefix=str(output / "ants_"),
                               write_composite_transform=True)
    return sitk.ReadTransform(result["fwdtransforms"])


def main() -> None:
    """Run one in-file method and write ``OUTPUT_DIR/transform.h5``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", choices=["sitk-demons", "ants-syn"])
    parser.add_argument("fixed", type=Path)
    parser.add_argument("moving", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(THREADS)
    if args.method == "sitk-demons":
        fixed = _normalised(sitk.ReadImage(str(args.fixed)))
        transform = sitk_demons(fixed, _normalised(sitk.ReadImage(str(args.moving))))
    else:
        transform = ants_syn(args.fixed, args.moving, args.output)
    sitk.WriteTransform(transform, str(args.output / "transform.h5"))


if __name__ == "__main__":
    main()
