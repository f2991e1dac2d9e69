"""Defaults shared by ``register``, ``evaluate`` and their command lines (no heavy imports)."""

from __future__ import annotations

# The shipped network, refined on the pair, registers unless the user picks another model.
DEFAULT_MODEL = "shmoareg"

# Optimisation steps on the pair per device without a network (`--model none`), from the coarsest
# level (1/8) up. On the benchmark brains 50 CPU steps gave the Dice of 100 in half the time.
DEFAULT_REFINE_STEPS = {"cpu": 50, "cuda": 150}

# Refinement steps after a network's prediction, which seeds the field: the optimisation starts at
# the network input's resolution instead of 1/8, since the coarse deformation is already there
# (chosen by measurement on a pair the benchmark does not score: benchmarks/README.md, "Refinement
# after the network").
NETWORK_REFINE_STEPS = {"cpu": 10, "cuda": 30}

# The same across contrasts (similarity MIND-SSC or NGF): the network's prediction is weaker there, and 10
# steps left 1.25 mm end-point error where 30 reach 0.85 (a T1 brain against another contrast of itself at
# 1 mm, benchmarks/README.md "Similarity across contrasts").
CROSS_CONTRAST_REFINE_STEPS = {"cpu": 30, "cuda": 90}

# Largest network input (voxels) per device: above it the network sees the working grid averaged
# down 2x and its field is upsampled; the refinement then starts at that resolution. On CPU a
# half-resolution prediction costs about an eighth.
DEFAULT_NETWORK_MAX_VOXELS = {"cpu": 500_000, "cuda": 4_000_000}

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
