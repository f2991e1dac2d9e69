"""``register``: from two image files to a transform, warped images, Jacobian and a summary.

:func:`register` runs a :class:`~shmoareg.method.RegistrationMethod` (network then refinement, refinement
alone, network alone) as a sequence of named stages: load and initialise (:mod:`shmoareg.start`: read,
normalise, foregrounds, affine, overlap; torch-free, and begun in a thread by the command line), the working grid
(:func:`_working_pair`), predict (:func:`_predict`, with a network), refine (:func:`_refine`), write
(:func:`_write`, through a staging folder) and summarise (:func:`_summary`). Each stage hands the next a
small record (``Start``, ``_WorkingPair``, ``NetworkPrediction``, ``_Result``, ``_Written``).
:func:`prepare` and :func:`predict` run the stages up to the network's prediction alone, writing nothing.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from shmoareg import __version__
from shmoareg.adaptation import adapted_to_pair
from shmoareg.affine import describe
from shmoareg.checkpoints import resolve_model
from shmoareg.devices import peak_memory_mb, resolve_device
from shmoareg.errors import InputError, NoSpace
from shmoareg.ensemble import ensemble_averaged
from shmoareg.fields import (displacement_image, displacement_transform, jacobian_image, total_displacement,
                             transform_lattice)
from shmoareg.grid import Grid, auto_spacing, foreground_box, from_array, network_grid, resample, to_tensor
from shmoareg.imageio import native_stderr_discarded, write_image, write_transform
from shmoareg.intensity import field_of_view
from shmoareg.method import RegistrationMethod
from shmoareg.metrics import dice_per_label, hd95_per_label, jacobian_statistics, mean_dice, target_registration_error
from shmoareg.model_maps import write_model_maps
from shmoareg.models.base import MapSpec, RoutingRecord
from shmoareg.network_share import network_share
from shmoareg.optimise import (OptimisationSettings, improves_similarity, levels_from, optimise_displacement,
                               structured)
from shmoareg.outputs import OutputFolder, StagedOutputs
from shmoareg.progress import Progress
from shmoareg.protocol import (ADAPT_LEARNING_RATE, COMPLETION_MARKER, CROSS_CONTRAST_REFINE_STEPS,
                               DEFAULT_NETWORK_FLIPS, DEFAULT_NETWORK_MAX_VOXELS, DEFAULT_NETWORK_SWAP,
                               DEFAULT_REFINE_STEPS, DEFAULT_SMOOTHNESS,
                               DISPLACEMENT_FILE, DISPLACEMENT_OUTPUT, EXTRA_OUTPUTS, FILES_KEY, JACOBIAN_FILE,
                               JACOBIAN_OUTPUT, MAPS_FILE, MAX_ADAPT_STEPS, MAX_NETWORK_FLIPS,
                               NETWORK_REFINE_START_FACTOR, NETWORK_REFINE_STEPS, ROUTING_FILE, ROUTING_MAP_MODES,
                               SIMILARITIES, TRANSFORM_FILE, UNCERTAINTY_FILE, WARPED_FILE, WARPED_SEGMENTATION_FILE)
from shmoareg.request import RegistrationRequest
from shmoareg.routing_maps import write_routing_maps
from shmoareg.similarity import choose_similarity
from shmoareg.spatial import resize_field
from shmoareg.start import Inputs, Start, StartInBackground, initialise, load_inputs
from shmoareg.uncertainty import SMOOTHNESS_FACTORS, ensemble_spread

# The working grid covers the fixed image's foreground (Otsu) and this margin, not its empty border.
CROP_MARGIN_MM = 10.0
# Bounds of the options that size the work: beyond them a run takes days or means nothing.
MAX_REFINE_STEPS = 10_000
MIN_GRID_VOXELS = 16 ** 3
MIN_GRID_VOXELS_ACROSS = 4
# summary.json's "network_prediction": whether the refinement started from the network's field (README).
PREDICTION_USED = "used"
PREDICTION_REJECTED = "rejected"
# Threads that write the outputs while the maps are computed: the transform, the warped image and segmentation.
WRITER_THREADS = 3
UNCERTAINTY_METHOD = ("spread (RMS distance from the mean, mm) of the registration and its refinements with the "
                      f"smoothness weight times {' and '.join(str(f) for f in SMOOTHNESS_FACTORS)}")
TRANSFORM_CONVENTION = ("ITK displacement field transform, LPS millimetres, resampling convention: "
                        "maps fixed-space points to moving-space points")


@dataclass
class _Network:
    model: torch.nn.Module
    metadata: dict


@dataclass
class NetworkPrediction:
    """A network's prediction: its displacement on the working grid, its routing, its per-voxel maps
    (``(B, 1, Z_l, Y_l, X_l)`` on level ``l`` of ``grid``) and their specs, and the grid it saw (level 1)."""

    displacement: torch.Tensor
    routing: RoutingRecord
    maps: dict[str, torch.Tensor]
    map_specs: list[MapSpec]
    grid: Grid


def _load_network(method: RegistrationMethod, device: torch.device) -> Optional[_Network]:
    if method.network is None:
        return None
    model, metadata = resolve_model(method.network)
    return _Network(model.to(device).eval(), metadata)


def _validate(request: RegistrationRequest) -> None:
    if request.refine_steps is not None and not 0 <= request.refine_steps <= MAX_REFINE_STEPS:
        raise InputError(f"--refine-steps must be between 0 and {MAX_REFINE_STEPS}, not {request.refine_steps}")
    levels = OptimisationSettings().levels
    if request.refine_start is not None and request.refine_start not in levels:
        raise InputError(f"refine_start must be one of the refinement's levels {', '.join(map(str, levels))}, "
                         f"not {request.refine_start}")
    if request.grid_spacing is not None and not (request.grid_spacing > 0 and math.isfinite(request.grid_spacing)):
        raise InputError(f"--grid-spacing must be a positive number of millimetres, not {request.grid_spacing}")
    for option, value, least in (("--max-grid-voxels", request.max_grid_voxels, MIN_GRID_VOXELS),
                                 ("--network-max-voxels", request.network_max_voxels, 1)):
        if value is not None and value < least:
            raise InputError(f"{option} must be a positive number of voxels, at least {least}, not {value}")
    if not 0 <= request.adapt_steps <= MAX_ADAPT_STEPS:
        raise InputError(f"--adapt-steps must be between 0 and {MAX_ADAPT_STEPS}, not {request.adapt_steps}")
    if request.adapt_steps and request.method.network is None:
        raise InputError("--adapt-steps adapts a network's weights: choose a --model other than none, or leave it out")
    if request.network_flips is not None and not 0 <= request.network_flips <= MAX_NETWORK_FLIPS:
        raise InputError(f"--network-flips must be between 0 and {MAX_NETWORK_FLIPS}, not {request.network_flips}")
    if request.routing_maps not in ROUTING_MAP_MODES:
        raise InputError(f"--routing-maps must be one of {', '.join(ROUTING_MAP_MODES)}, not {request.routing_maps!r}")
    if request.similarity not in SIMILARITIES:
        raise InputError(f"--similarity must be one of {', '.join(SIMILARITIES)}, not {request.similarity!r}")
    if not (request.smoothness > 0 and math.isfinite(request.smoothness)):
        raise InputError(f"--smoothness must be a positive number (default {DEFAULT_SMOOTHNESS}), "
                         f"not {request.smoothness}")
    unknown = sorted(set(request.extra_outputs) - set(EXTRA_OUTPUTS))
    if unknown:
        raise InputError(f"--extra-outputs takes {', '.join(EXTRA_OUTPUTS)}, not {', '.join(map(repr, unknown))}")
    if (request.fixed_landmarks is None) != (request.moving_landmarks is None):
        raise InputError("give both --fixed-landmarks and --moving-landmarks, or neither")


def _geometry(image: sitk.Image) -> dict:
    return {"size": list(image.GetSize()), "spacing": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()), "direction": list(image.GetDirection())}


def _segmentation_metrics(fixed_seg: sitk.Image, moving_seg: sitk.Image, warped_seg: sitk.Image,
                          on_fraction: Callable[[float], None]) -> dict:
    reference = sitk.GetArrayViewFromImage(fixed_seg)
    before = resample(moving_seg, Grid.of(fixed_seg), None, sitk.sitkNearestNeighbor)
    after = sitk.GetArrayViewFromImage(warped_seg)
    dice_before = dice_per_label(reference, sitk.GetArrayViewFromImage(before))
    dice_after = dice_per_label(reference, after)
    hd95_before = hd95_per_label(reference, sitk.GetArrayViewFromImage(before), fixed_seg.GetSpacing(),
                                 on_label=lambda f: on_fraction(f / 2))
    hd95 = hd95_per_label(reference, after, fixed_seg.GetSpacing(), on_label=lambda f: on_fraction(0.5 + f / 2))
    return {
        "dice_before": {str(k): v for k, v in dice_before.items()},
        "mean_dice_before": mean_dice(dice_before),
        "dice": {str(k): v for k, v in dice_after.items()},
        "mean_dice": mean_dice(dice_after),
        "hd95_before_mm": {str(k): v for k, v in hd95_before.items()},
        "mean_hd95_before_mm": _mean(hd95_before),
        "hd95_mm": {str(k): v for k, v in hd95.items()},
        "mean_hd95_mm": _mean(hd95),
    }


def _check_spacing(spacing: float, fixed: sitk.Image) -> None:
    """Refuse a working grid too coarse to show the fixed image: fewer than 4 voxels across its shortest side."""
    shortest = min(size * step for size, step in zip(fixed.GetSize(), fixed.GetSpacing()))
    if shortest / spacing < MIN_GRID_VOXELS_ACROSS:
        raise InputError(f"a {spacing:g} mm working grid leaves fewer than {MIN_GRID_VOXELS_ACROSS} voxels across the "
                         f"fixed image ({shortest:g} mm); give --grid-spacing of at most "
                         f"{shortest / MIN_GRID_VOXELS_ACROSS:g} mm or a larger --max-grid-voxels")


def _mean(values: dict) -> Optional[float]:
    """Mean of the finite values, None when there is none."""
    finite = [v for v in values.values() if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _landmark_metrics(landmarks: tuple[np.ndarray, np.ndarray, list[str]], transform: sitk.Transform) -> dict:
    fixed_points, moving_points, labels = landmarks
    before = np.linalg.norm(fixed_points - moving_points, axis=1)
    after = target_registration_error(fixed_points, moving_points, transform)
    return {"landmark_labels": labels,
            "tre_before_mm": float(before.mean()), "tre_mm": float(after.mean()),
            "tre_before_max_mm": float(before.max()), "tre_max_mm": float(after.max()),
            "tre_before_per_point_mm": before.tolist(), "tre_per_point_mm": after.tolist()}


def register(request: RegistrationRequest, progress: Optional[Progress] = None,
             early: Optional[StartInBackground] = None) -> dict:
    """Register ``request.moving`` onto ``request.fixed`` and write the outputs; returns the summary.

    ``early``: the request's first stages already begun in a thread (the command line begins them before it
    imports torch); without it they run here. Raises :class:`InputError` for bad input; nothing is written to the
    output folder unless the whole run succeeds.
    """
    progress = progress or Progress("none")
    started = time.perf_counter()
    _validate(request)
    with OutputFolder(request.output_dir) as folder:
        folder.check_inputs([request.fixed, request.moving, request.fixed_segmentation, request.moving_segmentation,
                             request.fixed_landmarks, request.moving_landmarks])
        return _register(request, progress, folder.path, started, early)


def _register(request: RegistrationRequest, progress: Progress, output_dir: Path, started: float,
              early: Optional[StartInBackground]) -> dict:
    """The stages of :func:`register` once the output folder is held."""
    device = resolve_device(request.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    prepared = _prepare(request, progress, device, early)
    network, inputs, start, pair = prepared.network, prepared.inputs, prepared.start, prepared.pair
    prediction = None
    if network is not None and request.adapt_steps:
        with progress.stage("adapt", "adapting the network to the pair"):
            prepared = adapt(prepared, on_step=lambda done: progress.update(
                done / request.adapt_steps, f"adapting the network to the pair: step {done}/{request.adapt_steps}"))
        network = prepared.network
    if network is not None:
        with progress.stage("predict", f"{network.model.name} network prediction"):
            prediction = predict(prepared)
    with progress.stage("register", "optimising the deformation on the pair"):
        result = _refine(request, pair, prediction, device.type, progress)
    if request.uncertainty:
        with progress.stage("uncertainty", "uncertainty: an ensemble of refinements"):
            result.spread = ensemble_spread(pair.fixed, pair.moving, result.settings, result.displacement,
                                            result.initial, pair.fixed_valid, pair.moving_valid,
                                            on_member=lambda f: progress.update(f, "uncertainty ensemble"))
    staged = StagedOutputs(output_dir)
    try:
        with progress.stage("write", "writing the transform and warped images"):
            written = _write(request, inputs, start, pair, prediction, result, network, staged, progress)
        summary = _summary(request, inputs, start, pair, prediction, result, network, written, device,
                           progress, started)
        staged.check_written()
        summary[FILES_KEY] = [*staged.files(), COMPLETION_MARKER]
        staged.write_json(COMPLETION_MARKER, summary)
        summary["outputs"] = staged.publish()
    except BaseException as error:
        full = not isinstance(error, NoSpace) and staged.full_disk(error)
        staged.discard()
        if full:
            raise staged.no_space("a write failed") from error
        raise
    progress.done(summary["outputs"])
    return summary


@dataclass
class PreparedPair:
    """What :func:`register` has before the network predicts: the request, the network (None for
    ``--model none``), the images read, the affine start and the pair on the working grid."""

    request: RegistrationRequest
    device: torch.device
    network: Optional[_Network]
    inputs: Inputs
    start: Start
    pair: _WorkingPair


def prepare(request: RegistrationRequest, progress: Optional[Progress] = None) -> PreparedPair:
    """:func:`register`'s stages up to the network's prediction (load the network and the images, the affine
    start, the working pair), writing nothing: with :func:`predict`, the network alone for a study."""
    _validate(request)
    return _prepare(request, progress or Progress("none"), resolve_device(request.device))


def _prepare(request: RegistrationRequest, progress: Progress, device: torch.device,
             early: Optional[StartInBackground] = None) -> PreparedPair:
    """:func:`prepare` for a request already validated (:func:`register` validates before it holds the folder);
    the inputs and the start from ``early`` when it is given."""
    with progress.stage("load", "reading the images and the network's weights"):
        network = _load_network(request.method, device)
        inputs = early.inputs() if early is not None else load_inputs(request)
    with progress.stage("affine", "affine initialisation" if request.affine else "checking overlap"):
        start = early.start() if early is not None else initialise(
            request, inputs, lambda f: progress.update(f, "affine initialisation"))
    with progress.stage("preprocess", "resampling onto the network grid"):
        pair = _working_pair(request, inputs, start, device)
    return PreparedPair(request, device, network, inputs, start, pair)


def adapt(prepared: PreparedPair, on_step: Optional[Callable[[int], None]] = None) -> PreparedPair:
    """``prepared`` with its network replaced by a copy adapted to the pair (``request.adapt_steps`` steps of
    :func:`~shmoareg.adaptation.adapted_to_pair` on the images the network sees, with the refinement's
    similarity and smoothness); the network it held is left unchanged."""
    if prepared.network is None:
        raise ValueError("the request has no network (--model none): nothing to adapt")
    request, pair = prepared.request, prepared.pair
    factor = _network_factor(pair.grid, _network_max_voxels(request, prepared.device.type))
    fixed, moving, fixed_valid, moving_valid = (_pooled(image, factor) for image in (
        pair.fixed, pair.moving, pair.fixed_valid, pair.moving_valid))
    settings = OptimisationSettings(similarity=pair.similarity, smoothness=request.smoothness)
    adapted = adapted_to_pair(prepared.network.model, fixed, moving, fixed_valid, moving_valid, settings,
                              request.adapt_steps, ADAPT_LEARNING_RATE, on_step)
    return replace(prepared, network=replace(prepared.network, model=adapted))


def predict(prepared: PreparedPair, moving: Optional[torch.Tensor] = None) -> NetworkPrediction:
    """The network's prediction on the prepared pair (or on ``moving`` in its place, e.g. the moving image
    already warped), with the request's or the device's network resolution, mirror and swap ensembles."""
    if prepared.network is None:
        raise ValueError("the request has no network (--model none): nothing to predict")
    request, pair = prepared.request, prepared.pair
    return _predict(prepared.network.model, pair.fixed, pair.moving if moving is None else moving, pair.grid,
                    _network_max_voxels(request, prepared.device.type), _network_flips(request, prepared.device.type),
                    _network_swap(request, prepared.device.type))


@dataclass
class _WorkingPair:
    """The pair on the working grid, with where each image has data (and the fixed image structure)."""

    grid: Grid
    spacing: float
    cropped: bool
    fixed: torch.Tensor
    moving: torch.Tensor
    fixed_valid: torch.Tensor
    moving_valid: torch.Tensor
    foreground: np.ndarray
    similarity: str


@dataclass
class _Result:
    """The deformable stages' outcome: the field on the working grid and how it was reached."""

    displacement: torch.Tensor
    settings: OptimisationSettings
    initial: Optional[torch.Tensor]
    prediction_status: Optional[str]
    spread: Optional[torch.Tensor] = None


@dataclass
class _Written:
    """What the write stage measured: the metrics, the network share and the maps' summaries."""

    metrics: dict
    share: Optional[float]
    routing_summary: Optional[dict]


def _working_pair(request: RegistrationRequest, inputs: Inputs, start: Start, device: torch.device) -> _WorkingPair:
    """Both images resampled onto the working grid (the moving one through the affine)."""
    spacing = request.grid_spacing or auto_spacing(inputs.fixed, request.max_grid_voxels)
    _check_spacing(spacing, inputs.fixed)
    region = foreground_box(start.fixed_mask, CROP_MARGIN_MM) if request.crop else None
    grid = network_grid(inputs.fixed, spacing, region=region)
    with ThreadPoolExecutor(max_workers=2) as pool:  # ITK's resampling releases the GIL
        fixed, moving, fixed_view, moving_view, foreground = pool.map(lambda job: resample(*job), [
            (start.fixed_norm, grid), (start.moving_norm, grid, start.affine),
            (field_of_view(inputs.fixed), grid, None, sitk.sitkLinear),
            (field_of_view(inputs.moving), grid, start.affine, sitk.sitkLinear),
            (start.fixed_mask, grid, None, sitk.sitkNearestNeighbor)])
    fixed, moving = to_tensor(fixed, device), to_tensor(moving, device)
    # The similarity counts where the fixed image has data and structure: an exactly flat region (the zero
    # background of a skull-stripped scan) has nothing to match, and counting it let the optimiser pull the
    # moving image's empty outside in (47 mm of background motion for an image registered to itself).
    fixed_valid = to_tensor(fixed_view, device) * structured(fixed)
    moving_valid = to_tensor(moving_view, device)
    foreground = sitk.GetArrayFromImage(foreground)
    similarity = request.similarity
    if similarity == "auto":
        similarity = choose_similarity(fixed, moving,
                                       torch.from_numpy(foreground).to(device)[None, None] * moving_valid)
    return _WorkingPair(grid, spacing, region is not None, fixed, moving, fixed_valid, moving_valid, foreground,
                        similarity)


def _refine(request: RegistrationRequest, pair: _WorkingPair, prediction: Optional[NetworkPrediction], device_type: str,
            progress: Progress) -> _Result:
    """The pair optimisation: from the network's prediction when it helps, else from the affine."""
    similarity = pair.similarity
    method = request.method
    settings = OptimisationSettings(steps=_refine_steps(method, similarity, device_type),
                                    diffeomorphic=request.diffeomorphic, similarity=similarity,
                                    smoothness=request.smoothness)
    initial = prediction.displacement if prediction is not None else None
    status = None if prediction is None else PREDICTION_USED
    if initial is not None and method.refine and not improves_similarity(
            pair.fixed, pair.moving, settings, initial, pair.fixed_valid, pair.moving_valid):
        # A prediction that matches the pair worse than none at all (an image and itself, or a pair unlike
        # the training data) would only be undone: the method becomes refinement alone, from the affine.
        initial, status = None, PREDICTION_REJECTED
        settings = replace(settings, steps=_refine_steps(RegistrationMethod.refinement_alone(method.steps),
                                                         similarity, device_type))
    if initial is not None:  # the coarse deformation is already there: start near the network's resolution
        start = request.refine_start or NETWORK_REFINE_START_FACTOR[device_type] * _factor(
            prediction.grid, pair.grid)
        settings = replace(settings, levels=levels_from(settings.levels, start))
    displacement = optimise_displacement(
        pair.fixed, pair.moving, settings, initial=initial, fixed_valid=pair.fixed_valid,
        moving_valid=pair.moving_valid, on_step=lambda f: progress.update(f, "optimising the deformation on the pair"))
    return _Result(displacement, settings, initial, status)


def _write(request: RegistrationRequest, inputs: Inputs, start: Start, pair: _WorkingPair,
           prediction: Optional[NetworkPrediction], result: _Result, network: Optional[_Network], staged: StagedOutputs,
           progress: Progress) -> _Written:
    """The transform (on its lattice), the warped images on the fixed grid, the extra outputs asked for, the
    uncertainty and the maps, and the metrics. The files are written by a pool of threads while this one computes
    the maps (ITK's filters and writers release the GIL)."""
    fixed_grid = Grid.of(inputs.fixed)
    lattice = transform_lattice(pair.grid, fixed_grid)
    staged.ensure_space(int(np.prod(fixed_grid.size)), int(np.prod(lattice.size)))
    fixed_foreground = sitk.GetArrayViewFromImage(start.fixed_mask)
    field_mm = total_displacement(result.displacement, pair.grid, lattice, start.affine)
    transform = displacement_transform(field_mm, lattice)
    with native_stderr_discarded(), ThreadPoolExecutor(max_workers=WRITER_THREADS) as pool:
        writes = [pool.submit(write_transform, transform, staged.path(TRANSFORM_FILE)),
                  pool.submit(_write_warped, inputs.moving, fixed_grid, transform, sitk.sitkLinear,
                              float(sitk.GetArrayViewFromImage(inputs.moving).min()), staged, WARPED_FILE)]
        warped_seg = None if inputs.moving_segmentation is None else pool.submit(
            _write_warped, inputs.moving_segmentation, fixed_grid, transform, sitk.sitkNearestNeighbor, 0.0,
            staged, WARPED_SEGMENTATION_FILE)
        progress.update(0.2, "the Jacobian determinant")
        jacobian = jacobian_image(field_mm, lattice)
        lattice_foreground = sitk.GetArrayViewFromImage(resample(start.fixed_mask, lattice, None,
                                                                 sitk.sitkNearestNeighbor))
        metrics = jacobian_statistics(sitk.GetArrayViewFromImage(jacobian), lattice_foreground > 0)
        if JACOBIAN_OUTPUT in request.extra_outputs:
            writes.append(pool.submit(write_image, jacobian, staged.path(JACOBIAN_FILE), False))
        if DISPLACEMENT_OUTPUT in request.extra_outputs:
            # Float fields do not compress (gzip made them larger and took seconds): plain NIfTI.
            writes.append(pool.submit(write_image, sitk.Cast(displacement_image(field_mm, lattice),
                                                             sitk.sitkVectorFloat32),
                                      staged.path(DISPLACEMENT_FILE), False))
        if inputs.landmarks is not None:
            metrics.update(_landmark_metrics(inputs.landmarks, transform))
        if result.spread is not None:
            uncertainty = resample(from_array(result.spread[0, 0].cpu().numpy() * pair.spacing, pair.grid), fixed_grid,
                                   sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, extrapolate=True)
            writes.append(pool.submit(write_image, sitk.Cast(uncertainty, sitk.sitkFloat32),
                                      staged.path(UNCERTAINTY_FILE)))
            metrics["uncertainty_mean_mm"] = float(np.mean(
                sitk.GetArrayViewFromImage(uncertainty)[fixed_foreground > 0]))
        share = None if network is None else 0.0
        if result.initial is not None:
            share = network_share(result.displacement, result.initial, pair.grid, pair.foreground)
        maps_summary = routing_summary = None
        if prediction is not None and prediction.maps:
            progress.update(0.4, "the network's maps")
            maps_summary = write_model_maps(
                prediction.maps, prediction.map_specs, prediction.grid, fixed_grid, fixed_foreground, staged.path,
                write_files=request.routing_maps != "none", model=network.model.name)
            maps_summary["network_share"] = share
            staged.write_json(MAPS_FILE, maps_summary)
        if prediction is not None and prediction.routing.decoder_gates:
            routing_summary = write_routing_maps(
                prediction.routing, network.model.expert_descriptions(), prediction.grid, fixed_grid,
                fixed_foreground, staged.path, request.routing_maps, maps_summary)
            routing_summary["network_share"] = share
            staged.write_json(ROUTING_FILE, routing_summary)
        progress.update(0.6, "writing the transform and warped images")
        for write in writes:
            write.result()
        warped_segmentation = warped_seg.result() if warped_seg is not None else None
        if warped_segmentation is not None and inputs.fixed_segmentation is not None:
            metrics.update(_segmentation_metrics(
                inputs.fixed_segmentation, inputs.moving_segmentation, warped_segmentation,
                lambda f: progress.update(0.6 + 0.4 * f, "segment overlap (Dice, HD95) before and after")))
    return _Written(metrics, share, routing_summary)


def _write_warped(image: sitk.Image, grid: Grid, transform: sitk.Transform, interpolator: int, background: float,
                  staged: StagedOutputs, name: str) -> sitk.Image:
    """``image`` resampled onto ``grid`` through ``transform``, written as output ``name`` and checked there (in the
    writing thread, beside the other work of the stage); returns it."""
    warped = resample(image, grid, transform, interpolator, background)
    write_image(warped, staged.path(name))
    staged.check_file(name)
    return warped


def _summary(request: RegistrationRequest, inputs: Inputs, start: Start, pair: _WorkingPair,
             prediction: Optional[NetworkPrediction], result: _Result, network: Optional[_Network], written: _Written,
             device: torch.device, progress: Progress, started: float) -> dict:
    """The content of ``summary.json`` (its list of files is added once everything is written)."""
    settings = result.settings
    return {
        "shmoareg_version": __version__,
        "inputs": {
            "fixed": str(request.fixed), "moving": str(request.moving),
            "fixed_segmentation": _optional(request.fixed_segmentation),
            "moving_segmentation": _optional(request.moving_segmentation),
            "fixed_geometry": _geometry(inputs.fixed), "moving_geometry": _geometry(inputs.moving),
        },
        "method": {"model": request.model, "refine_steps": settings.steps, "similarity": settings.similarity,
                   "similarity_requested": request.similarity, "smoothness": settings.smoothness,
                   "settings": asdict(settings), "intensity": request.intensity, "window": request.window,
                   "uncertainty": UNCERTAINTY_METHOD if request.uncertainty else None,
                   "network_flips": _network_flips(request, device.type) if network is not None else None,
                   "network_swap": _network_swap(request, device.type) if network is not None else None,
                   "adapt_steps": request.adapt_steps,
                   "adapt_learning_rate": ADAPT_LEARNING_RATE if request.adapt_steps else None},
        "model": _model_summary(network),
        "expert_utilisation": written.routing_summary["utilisation"] if written.routing_summary else None,
        "network_share": written.share,
        "network_prediction": result.prediction_status,
        "device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "network_grid": {"size": list(pair.grid.size), "spacing_mm": pair.spacing, "origin": list(pair.grid.origin),
                         "cropped_to_foreground": pair.cropped,
                         "network_input_size": list(prediction.grid.size) if prediction is not None else None},
        "affine": describe(start.affine) if start.affine is not None else None,
        "overlap_after_initialisation": start.overlap,
        "transform_convention": TRANSFORM_CONVENTION,
        "seconds": {**progress.seconds, "total": round(time.perf_counter() - started, 3)},
        "memory": peak_memory_mb(device),
        "metrics": written.metrics,
        "jacobian_region": "fixed image foreground (Otsu)",
    }


def _network_flips(request: RegistrationRequest, device_type: str) -> int:
    """The mirror ensemble's axes: the request's, or the device's default."""
    return DEFAULT_NETWORK_FLIPS[device_type] if request.network_flips is None else request.network_flips


def _network_swap(request: RegistrationRequest, device_type: str) -> bool:
    """Whether the network also predicts on the pair swapped: the request's choice, or the device's default."""
    return DEFAULT_NETWORK_SWAP[device_type] if request.network_swap is None else request.network_swap


def _refine_steps(method: RegistrationMethod, similarity: str, device_type: str) -> int:
    """The method's refinement steps, or the default for the method, the similarity and the device."""
    if not method.refine:
        return 0
    if method.steps is not None:
        return method.steps
    if method.network is None:
        return DEFAULT_REFINE_STEPS[device_type]
    return (NETWORK_REFINE_STEPS if similarity == "lncc" else CROSS_CONTRAST_REFINE_STEPS)[device_type]


@torch.no_grad()
def _predict(model: torch.nn.Module, fixed: torch.Tensor, moving: torch.Tensor, grid: Grid,
             max_voxels: int, flips: int = 0, swap: bool = False) -> NetworkPrediction:
    """The network's displacement on ``grid``, its routing and maps, and the grid it saw (their level 1).

    Above ``max_voxels`` the network sees the images averaged down 2x (the model pads any size to its
    levels and crops back) and its field is upsampled to ``grid``. With ``flips`` and ``swap``, the field is the
    mirror and swap ensembles' (:func:`~shmoareg.ensemble.ensemble_averaged`); the routing and maps are those of
    the plain pass.
    """
    factor = _network_factor(grid, max_voxels)
    fixed, moving = (_pooled(image, factor) for image in (fixed, moving))
    output = model(fixed, moving)
    displacement = ensemble_averaged(lambda f, m: model(f, m).displacement, fixed, moving, flips, swap,
                                     output.displacement)
    input_grid = grid.coarsened(factor, tuple(displacement.shape[2:][::-1]))
    specs = model.map_specs() if hasattr(model, "map_specs") else []
    return NetworkPrediction(resize_field(displacement, grid.shape), output.routing, dict(output.maps), specs,
                             input_grid)


def _network_max_voxels(request: RegistrationRequest, device_type: str) -> int:
    """The largest network input: the request's, or the device's default."""
    return request.network_max_voxels or DEFAULT_NETWORK_MAX_VOXELS[device_type]


def _network_factor(grid: Grid, max_voxels: int) -> int:
    """How much the working grid is averaged down for the network: 2 above ``max_voxels``, else 1."""
    return 2 if int(np.prod(grid.size)) > max_voxels else 1


def _pooled(image: torch.Tensor, factor: int) -> torch.Tensor:
    return F.avg_pool3d(image, factor) if factor > 1 else image


def _factor(coarse: Grid, fine: Grid) -> int:
    """How many times coarser ``coarse`` is than ``fine`` (both isotropic)."""
    return max(1, round(coarse.spacing[0] / fine.spacing[0]))


def _model_summary(network: Optional[_Network]) -> Optional[dict]:
    if network is None:
        return None
    return {"name": network.model.name, "weights_sha256": network.metadata["weights"]["sha256"],
            "parameters": sum(p.numel() for p in network.model.parameters()),
            "weights_path": network.metadata["weights_path"], "trained_step": network.metadata.get("step"),
            "config": network.metadata["model"]["config"]}


def _optional(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None
