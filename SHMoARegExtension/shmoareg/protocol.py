"""The engine's protocol, defined once (standard library only): exit codes, output file names, the choice
lists of the command line and the defaults.

The engine, the Slicer module (``SHMoARegLib``, which imports this module and nothing else of the engine) and
the tests all read these names from here.
"""

from __future__ import annotations

import enum
from typing import Iterable


class ExitCode(enum.IntEnum):
    """Exit codes of ``shmoareg`` commands."""

    OK = 0
    ERROR = 1
    BAD_INPUT = 2
    OUT_OF_MEMORY = 3
    NO_SPACE = 4
    CANCELLED = 130


# Events of the JSON-lines protocol (shmoareg.progress): progress while a command runs, then one final event, done
# (exit code OK) or error (with its exit code). The warm engine first says once that it is ready.
PROGRESS_EVENT = "progress"
DONE_EVENT = "done"
ERROR_EVENT = "error"
READY_EVENT = "ready"
FINAL_EVENTS = (DONE_EVENT, ERROR_EVENT)

# The warm engine, ``shmoareg serve``: it loads torch and the shipped weights once, prints a READY_EVENT line, then
# reads one JSON request per line on stdin, {REQUEST_COMMAND_KEY: "register", REQUEST_ARGUMENTS_KEY: [the words that
# follow ``shmoareg register``]}, and runs them one at a time, each answered with the events of the one-shot command
# and exactly one final event. SIGINT cancels the running request (an error event with ExitCode.CANCELLED) and the
# engine goes on; the end of stdin or SIGTERM ends it.
SERVE_COMMAND = "serve"
SERVED_COMMANDS = ("register",)
REQUEST_COMMAND_KEY = "command"
REQUEST_ARGUMENTS_KEY = "arguments"

# The files a run writes (a network's maps under MAPS_FOLDER as <map name>.nii.gz, listed in MAPS_FILE; SHMoAReg's
# gate maps under ROUTING_FOLDER). summary.json is moved last: its presence marks a complete set of outputs, and
# its FILES_KEY lists the run's files.
TRANSFORM_FILE = "transform.h5"
DISPLACEMENT_FILE = "displacement.nii"
WARPED_FILE = "warped_moving.nii.gz"
WARPED_SEGMENTATION_FILE = "warped_moving_seg.nii.gz"
JACOBIAN_FILE = "jacobian.nii"
UNCERTAINTY_FILE = "uncertainty.nii.gz"
ROUTING_FILE = "routing.json"
ROUTING_FOLDER = "routing"
MAPS_FILE = "maps.json"
MAPS_FOLDER = "maps"
COMPLETION_MARKER = "summary.json"
OUTPUT_NAMES = (TRANSFORM_FILE, DISPLACEMENT_FILE, WARPED_FILE, WARPED_SEGMENTATION_FILE, JACOBIAN_FILE,
                UNCERTAINTY_FILE, ROUTING_FILE, MAPS_FILE, COMPLETION_MARKER)
OUTPUT_FOLDERS = (ROUTING_FOLDER, MAPS_FOLDER)
FILES_KEY = "files"
# Files ``register`` writes only when asked (``--extra-outputs``): the Jacobian determinant and the field as a vector
# image, both on the transform's own grid (summary.json has the Jacobian's statistics either way).
JACOBIAN_OUTPUT = "jacobian"
DISPLACEMENT_OUTPUT = "displacement"
EXTRA_OUTPUTS = {JACOBIAN_OUTPUT: JACOBIAN_FILE, DISPLACEMENT_OUTPUT: DISPLACEMENT_FILE}
# A network's weights and their sidecar (shipped in shmoareg/weights as <name><suffix>, or a checkpoint).
WEIGHTS_SUFFIX = ".safetensors"

# What ``batch`` adds: in each pair's folder an overview PNG of the run, its thumbnail and the pair's page of the
# report; in its own output folder the tables and the report.
OVERVIEW_FILE = "overview.png"
THUMBNAIL_FILE = "overview_thumbnail.png"
PAIR_PAGE_FILE = "pair.html"
RESULTS_CSV_FILE = "results.csv"
RESULTS_JSON_FILE = "results.json"
REPORT_FILE = "report.html"

# maps.json: each map is categorical (values 1..K name its categories, 0 none) or scalar; a map of one displacement
# axis names it; a scalar map's statistics over the fixed foreground are these, and its colour map one of these.
MAP_KINDS = ("categorical", "scalar")
AXES = ("x", "y", "z")
MAP_PERCENTILES = (5, 25, 50, 75, 95)
MAP_STATISTICS = ("mean", "min", "max", *(f"p{p}" for p in MAP_PERCENTILES))
COLOUR_MAPS = ("viridis", "inferno")

# Choice lists of the command line ("auto": CUDA when torch sees a GPU; intensity "auto": CT or MR from the
# image's values).
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_DEVICE = "auto"
INTENSITY_MODES = ("auto", "mr", "ct", "none")
DEFAULT_INTENSITY = "auto"

# The shipped network, refined on the pair, registers unless the user picks another model.
DEFAULT_MODEL = "shmoareg"


def default_first(names: Iterable[str]) -> tuple[str, ...]:
    """Model names in the order every list of them shows: the default first, then by name."""
    return tuple(sorted(names, key=lambda name: (name != DEFAULT_MODEL, name)))

# Optimisation steps on the pair per device without a network (`--model none`), from the coarsest
# level (1/8) up. On the benchmark brains 50 CPU steps gave the Dice of 100 in half the time.
DEFAULT_REFINE_STEPS = {"cpu": 50, "cuda": 150}

# Refinement steps after a network's prediction, which seeds the field, and where they start: this many times
# coarser than the network's input grid (1: at its resolution; ``RegistrationRequest.refine_start`` overrides it
# with a level, a factor of the working grid). Chosen on the real-brain group's manual labels (issue 23,
# benchmarks/README.md "Refinement after the network on real brains"): on CPU 30 steps from one level above the
# network's input (1/4 on a 1 mm head) beat `--model none` on every tuning pair (+0.013 mean Dice), where the
# earlier 10 steps at the network's resolution lost to it (-0.003); CUDA's are not re-measured.
NETWORK_REFINE_STEPS = {"cpu": 30, "cuda": 30}
NETWORK_REFINE_START_FACTOR = {"cpu": 2, "cuda": 1}

# The same across contrasts (similarity MIND-SSC or NGF): the network's prediction is weaker there, and 10
# steps left 1.25 mm end-point error where 30 reach 0.85 (a T1 brain against another contrast of itself at
# 1 mm, benchmarks/README.md "Similarity across contrasts").
CROSS_CONTRAST_REFINE_STEPS = {"cpu": 30, "cuda": 90}

# Largest network input (voxels) per device: above it the network sees the working grid averaged
# down 2x and its field is upsampled; the refinement then starts at that resolution. On CPU a
# half-resolution prediction costs about an eighth.
DEFAULT_NETWORK_MAX_VOXELS = {"cpu": 500_000, "cuda": 4_000_000}

# Test-time ensembles of the network's prediction (shmoareg.ensemble). Mirror: its field is averaged with those
# predicted on the pair mirrored along the first N axes (x, y, z), one more network pass each. Swap: the
# antisymmetric mean of that on the pair and on the pair swapped, twice the passes. On CPU (0.5 s a pass) the
# swap alone, 2 passes: at the cost of one mirror it halves more of the network's error on the cases the
# benchmark never scores (a known warp of a real scan, brain-shaped synthetic pairs); on GPU both, 8 passes,
# the least error there (benchmarks/README.md, "Mirror and swap ensembles").
MAX_NETWORK_FLIPS = 3
DEFAULT_NETWORK_FLIPS = {"cpu": 0, "cuda": 3}
DEFAULT_NETWORK_SWAP = {"cpu": True, "cuda": True}

# Test-time adaptation (shmoareg.adaptation): ``--adapt-steps N`` fine-tunes a copy of the network's weights on the
# pair (Adam at ADAPT_LEARNING_RATE on the refinement's similarity and smoothness) before it predicts, so its field
# and maps are the adapted network's. Off by default: on CPU a step costs about 2 s at a head's network grid, and 50
# steps left a known 2.0 mm warp of a real scan 1.30 mm off where the pair optimisation reaches 0.8-0.9 mm in
# seconds; 3e-3 overshot, 1e-4 barely moved (benchmarks/README.md, "Test-time adaptation").
MAX_ADAPT_STEPS = 1000
ADAPT_LEARNING_RATE = 1e-3

# Maps ``register`` writes for a network: every map it offers (``maps/``; for SHMoAReg the arg-max expert
# per level and axis); "full" adds SHMoAReg's gate probabilities (one volume per level, axis and expert);
# "none" writes no map files (maps.json and routing.json still give the statistics).
ROUTING_MAP_MODES = ("full", "experts", "none")
DEFAULT_ROUTING_MAPS = "experts"

# Similarity of the pair optimisation: local NCC (same contrast), MIND-SSC (across contrasts), or
# "auto", which picks one per pair (shmoareg.similarity).
SIMILARITIES = ("auto", "lncc", "mind", "ngf")
DEFAULT_SIMILARITY = "auto"

# Weight of the deformation's smoothness term in the pair optimisation (larger: smoother).
DEFAULT_SMOOTHNESS = 1.0
