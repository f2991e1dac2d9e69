"""The ``shmoareg`` command line: ``register``, ``batch``, ``train``, ``evaluate`` and ``serve``.

Exit codes: 0 done, 1 internal error, 2 bad input, 3 out of memory, 4 no space left on the output
folder's disk, 130 cancelled
(SIGINT/SIGTERM). stderr carries one human-readable line; ``--progress json`` prints
JSON lines on stdout (see :mod:`shmoareg.progress`).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from shmoareg import __version__
from shmoareg.errors import Cancelled, InputError, require_file
from shmoareg.failures import describe_failure
from shmoareg.progress import MODES as PROGRESS_MODES
from shmoareg.progress import Progress
from shmoareg.protocol import (CROSS_CONTRAST_REFINE_STEPS, DEFAULT_DEVICE, DEFAULT_INTENSITY, DEFAULT_MODEL,
                               DEFAULT_NETWORK_FLIPS, DEFAULT_NETWORK_MAX_VOXELS, DEFAULT_NETWORK_SWAP,
                               DEFAULT_REFINE_STEPS, DEFAULT_ROUTING_MAPS, DEFAULT_SIMILARITY, DEFAULT_SMOOTHNESS,
                               DEVICES, EXTRA_OUTPUTS, INTENSITY_MODES, MAX_NETWORK_FLIPS, NETWORK_REFINE_STEPS,
                               ROUTING_MAP_MODES, SERVE_COMMAND, SIMILARITIES, ExitCode)
from shmoareg.training.commands import add_evaluate_parser, add_train_parser


# argparse's own pattern (-5, -.5) with exponents added (-1e3, -2.5E-1).
NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$|^-(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _register_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("register", help="register a moving image onto a fixed image",
                                   description="Register a moving image onto a fixed image and write the "
                                               "transform, warped images, Jacobian and summary.json.")
    parser.add_argument("--fixed", required=True, type=Path, help="fixed (reference) image")
    parser.add_argument("--moving", required=True, type=Path, help="moving image, to be aligned to the fixed one")
    parser.add_argument("--fixed-seg", type=Path, help="label map on the fixed image's grid (for Dice)")
    parser.add_argument("--moving-seg", type=Path, help="label map on the moving image's grid (warped too)")
    parser.add_argument("--output-dir", required=True, type=Path, help="folder for the outputs (created)")
    parser.add_argument("--fixed-landmarks", type=Path, help="CSV or .mrk.json points in the fixed image (TRE)")
    parser.add_argument("--moving-landmarks", type=Path, help="corresponding points in the moving image")
    add_method_options(parser)


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """The options of how a pair is registered (all of ``register``'s but its files), and ``--progress``;
    ``batch`` takes the same ones for every pair of its table."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"network model name or checkpoint path "
                        f"(default: {DEFAULT_MODEL}, the shipped weights); 'none' optimises the field on the "
                        "pair alone")
    parser.add_argument("--device", default=DEFAULT_DEVICE, choices=DEVICES)
    parser.add_argument("--refine-steps", type=int, help="optimisation steps on the pair. With a network they "
                        "start from its field at the network input's resolution (default: "
                        f"{NETWORK_REFINE_STEPS['cpu']} on CPU, {NETWORK_REFINE_STEPS['cuda']} on GPU; across "
                        f"contrasts {CROSS_CONTRAST_REFINE_STEPS['cpu']} and {CROSS_CONTRAST_REFINE_STEPS['cuda']}; "
                        "0 uses the network prediction alone); with --model none from 1/8 up (default: "
                        f"{DEFAULT_REFINE_STEPS['cpu']} on CPU, {DEFAULT_REFINE_STEPS['cuda']} on GPU)")
    parser.add_argument("--affine", action=argparse.BooleanOptionalAction, default=True,
                        help="affine initialisation (centre of mass, a rotation search, then Mattes MI affine; "
                             "default on)")
    parser.add_argument("--diffeomorphic", action=argparse.BooleanOptionalAction, default=True,
                        help="optimise a velocity field integrated by scaling and squaring (default on)")
    parser.add_argument("--similarity", default=DEFAULT_SIMILARITY, choices=SIMILARITIES,
                        help="similarity of the pair optimisation: lncc (local NCC, one contrast), mind (MIND-SSC) "
                             "or ngf (normalised gradient fields), both across contrasts (CT/MR, T1/T2), or auto "
                             "(default: lncc, or mind when the pair's intensities are not linearly related; "
                             "see README)")
    parser.add_argument("--smoothness", type=float, default=DEFAULT_SMOOTHNESS, metavar="W",
                        help=f"weight of the deformation's smoothness (default {DEFAULT_SMOOTHNESS}); larger is "
                             "smoother and more regular, smaller follows more detail")
    parser.add_argument("--uncertainty", action=argparse.BooleanOptionalAction, default=False,
                        help="write uncertainty.nii.gz (mm): the spread of an ensemble of refinements; costs two "
                             "more refinements (default off)")
    parser.add_argument("--grid-spacing", type=float, help="isotropic network-grid spacing in mm "
                        "(default: the fixed image's finest spacing, coarsened to fit --max-grid-voxels)")
    parser.add_argument("--max-grid-voxels", type=int, default=2_000_000,
                        help="voxel budget of the grid over the whole fixed image (default 2000000)")
    parser.add_argument("--network-max-voxels", type=int, help="largest network input; above it the network "
                        f"sees the grid averaged down 2x (default: {DEFAULT_NETWORK_MAX_VOXELS['cpu']} on CPU, "
                        f"{DEFAULT_NETWORK_MAX_VOXELS['cuda']} on GPU)")
    parser.add_argument("--network-flips", type=int, choices=range(MAX_NETWORK_FLIPS + 1),
                        metavar=f"0-{MAX_NETWORK_FLIPS}",
                        help="average the network's field with its predictions on the pair mirrored along the "
                             f"first N axes (x, y, z), one network pass each (default {DEFAULT_NETWORK_FLIPS['cpu']} "
                             f"on CPU, {DEFAULT_NETWORK_FLIPS['cuda']} on GPU)")
    parser.add_argument("--network-swap", action=argparse.BooleanOptionalAction,
                        help="also predict on the pair swapped (moving as fixed) and take the antisymmetric mean of "
                             "the two fields, twice the network passes (default "
                             f"{_on_off(DEFAULT_NETWORK_SWAP['cpu'])} on CPU, {_on_off(DEFAULT_NETWORK_SWAP['cuda'])} "
                             "on GPU)")
    parser.add_argument("--adapt-steps", type=int, default=0, metavar="N",
                        help="test-time adaptation: fine-tune a copy of the network's weights on the pair for N "
                             "steps before it predicts, so its field and maps are the adapted network's (default 0; "
                             "about 2 s a step on CPU, meant for a GPU)")
    parser.add_argument("--crop", action=argparse.BooleanOptionalAction, default=True,
                        help="work only on the fixed image's foreground (Otsu) plus 10 mm; outside it the "
                             "field continues its border values (default on)")
    parser.add_argument("--intensity", default=DEFAULT_INTENSITY, choices=INTENSITY_MODES,
                        help="intensity normalisation: MR percentiles, CT window, or auto-detect")
    parser.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="intensity window mapped to [0, 1] (overrides --intensity)")
    parser.add_argument("--routing-maps", default=DEFAULT_ROUTING_MAPS, choices=ROUTING_MAP_MODES,
                        help="the network's per-voxel maps to write: every map it offers in maps/ (experts, the "
                             "default; for SHMoAReg the arg-max expert per level and axis), those and SHMoAReg's "
                             "gate maps (full: one volume per level, axis and expert), or none (maps.json and "
                             "routing.json still give their statistics)")
    parser.add_argument("--extra-outputs", nargs="+", default=[], choices=list(EXTRA_OUTPUTS), metavar="FILE",
                        help="also write these files, on the transform's grid: jacobian (jacobian.nii, the Jacobian "
                             "determinant; summary.json has its statistics either way) and displacement "
                             "(displacement.nii, the field as a vector image); default: neither")
    parser.add_argument("--progress", default="bar", choices=PROGRESS_MODES,
                        help="json: one JSON object per line on stdout; bar: a text bar on stderr")


def _on_off(value: bool) -> str:
    return "on" if value else "off"


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~shmoareg.pipeline.RegistrationRequest` fields that :func:`add_method_options` sets."""
    return dict(model=args.model, device=args.device, refine_steps=args.refine_steps, affine=args.affine,
                grid_spacing=args.grid_spacing, max_grid_voxels=args.max_grid_voxels, crop=args.crop,
                network_max_voxels=args.network_max_voxels, network_flips=args.network_flips,
                network_swap=args.network_swap, adapt_steps=args.adapt_steps, intensity=args.intensity,
                window=tuple(args.window) if args.window else None, diffeomorphic=args.diffeomorphic,
                routing_maps=args.routing_maps, similarity=args.similarity, smoothness=args.smoothness,
                uncertainty=args.uncertainty, extra_outputs=tuple(args.extra_outputs))


def _batch_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch", help="register every pair of a CSV table (resumable, torchrun-sharded) with an HTML report",
        description="Register every pair of a CSV table into <output-dir>/<id>/ with the same options as register, "
                    "skipping pairs finished by an earlier run, and write results.csv, results.json and report.html. "
                    "Under `torchrun ... -m shmoareg batch` the pairs are dealt over the ranks.")
    parser.add_argument("--pairs", required=True, type=Path,
                        help="CSV table with columns id, fixed, moving and optionally fixed_seg, moving_seg, "
                             "fixed_landmarks, moving_landmarks (relative paths start at the table's folder)")
    parser.add_argument("--output-dir", required=True, type=Path,
                        help="folder for one subfolder per pair, the tables and the report (created)")
    add_method_options(parser)


def _serve_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        SERVE_COMMAND, help="a warm engine: run register requests read from stdin, one at a time",
        description="Load torch and the shipped weights once, print a JSON 'ready' line, then run the register "
                    "requests read from stdin, one JSON object per line, answering each with register's JSON progress "
                    "and one done or error event with its exit code. SIGINT cancels the running request; the end of "
                    "stdin or SIGTERM ends the engine (the request format: shmoareg.protocol, README).")
    parser.set_defaults(progress="json")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (an :class:`InputError`), not a usage block and an exit, and a
    value in exponent notation (``--window -1e3 1e3``) is a negative number, not an unknown option."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``shmoareg`` command (its subcommands' parsers are of the same class)."""
    parser = _Parser(prog="shmoareg", description="SHMoAReg deformable image registration")
    parser.add_argument("--version", action="version", version=f"shmoareg {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _register_parser(subparsers)
    _batch_parser(subparsers)
    add_train_parser(subparsers)
    add_evaluate_parser(subparsers)
    _serve_parser(subparsers)
    return parser


# The image files ``register`` reads, by role: checked before torch and the model load (a second or more).
INPUT_IMAGES = {"fixed": "fixed image", "moving": "moving image", "fixed_seg": "fixed segmentation",
                "moving_seg": "moving segmentation"}


def _run_register(args: argparse.Namespace, progress: Progress) -> None:
    for attribute, role in INPUT_IMAGES.items():
        if getattr(args, attribute) is not None:
            require_file(getattr(args, attribute), role)
    import SimpleITK as sitk

    from shmoareg.request import RegistrationRequest
    from shmoareg.start import StartInBackground

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's warnings would break the one-line protocol
    request = RegistrationRequest(
        fixed=args.fixed, moving=args.moving, output_dir=args.output_dir,
        fixed_segmentation=args.fixed_seg, moving_segmentation=args.moving_seg,
        fixed_landmarks=args.fixed_landmarks, moving_landmarks=args.moving_landmarks, **method_options(args))
    early = StartInBackground(request)  # reads the images and runs the affine while torch is imported
    from shmoareg.pipeline import register

    summary = register(request, progress, early)
    if args.progress != "json":
        print(f"done in {summary['seconds']['total']:.1f} s; outputs in {args.output_dir}")


def _run_batch(args: argparse.Namespace, progress: Progress) -> int:
    """Run ``batch``; its exit code is 0 when every pair finished, else the failed pairs' (1 when they differ)."""
    from shmoareg.cohort.table import read_pairs

    pairs = read_pairs(args.pairs)  # every problem of the table at once, before anything runs
    import SimpleITK as sitk

    from shmoareg.cohort.batch import run_batch

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's warnings would break the one-line protocol
    outcome = run_batch(pairs, args.pairs, args.output_dir, method_options(args), progress)
    if outcome is None:  # a rank other than 0: rank 0 reports for the whole run
        return ExitCode.OK
    if outcome.exit_code != ExitCode.OK:
        return _report(outcome.exit_code, outcome.message, progress)
    progress.done(outcome.outputs, outcome.message)
    if args.progress != "json":
        print(outcome.message)
    return ExitCode.OK


def _raise_cancelled(signum: int, frame: object) -> None:
    raise Cancelled(f"signal {signum}")


# What a cancelled command leaves behind: training keeps the checkpoints saved before the stop.
CANCELLED_MESSAGES = {
    "register": "cancelled: the run was stopped and no outputs were written",
    "batch": "cancelled: the batch stopped; pairs finished so far are kept and skipped by the next run of the same "
             "command, the tables and report were not written",
    "train": "cancelled: training stopped; the checkpoints saved so far are kept (resume with --resume)",
    "evaluate": "cancelled: evaluation stopped; finished pairs are kept under pairs/, results.csv and "
                "results.json were not written",
    SERVE_COMMAND: "cancelled: the engine stopped while it loaded",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit code. SIGINT and SIGTERM cancel the run."""
    previous = {signum: signal.signal(signum, _raise_cancelled) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            args = build_parser().parse_args(argv)
        except InputError as error:
            return _report(ExitCode.BAD_INPUT, f"error: {error}", Progress(_progress_mode(argv)))
        except (Cancelled, KeyboardInterrupt):
            return _report(ExitCode.CANCELLED, "cancelled before the command started", Progress(_progress_mode(argv)))
        return _run_reporting_errors(args, Progress(args.progress))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _progress_mode(argv: Optional[Sequence[str]]) -> str:
    """``json`` when the command line asks for JSON progress (so that even a usage error is a JSON event)."""
    words = list(sys.argv[1:] if argv is None else argv)
    asked = [words[i + 1] for i, word in enumerate(words[:-1]) if word == "--progress"]
    asked += [word.split("=", 1)[1] for word in words if word.startswith("--progress=")]
    return "json" if "json" in asked else "none"


def _report(code: int, message: str, progress: Progress) -> int:
    """Report a failure: a JSON event (in JSON mode) and one line on stderr; returns ``code``."""
    message = " ".join(message.split())
    progress.error(int(code), message)
    print(message, file=sys.stderr)
    return int(code)


def _run_reporting_errors(args: argparse.Namespace, progress: Progress) -> int:
    try:
        if args.command == "register":
            _run_register(args, progress)
        elif args.command == "batch":
            return _run_batch(args, progress)
        elif args.command == SERVE_COMMAND:
            from shmoareg.serve import serve

            return serve()
        else:
            args.run(args)
        return ExitCode.OK
    except (Cancelled, KeyboardInterrupt):
        code, message = ExitCode.CANCELLED, CANCELLED_MESSAGES[args.command]
    except Exception as error:  # noqa: BLE001 - every failure must become one line and an exit code
        code, message = describe_failure(error)
    return _report(code, message, progress)
