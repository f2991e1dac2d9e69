# Set-up and everyday commands. `make demo` and `make test` build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR := demo-output

.PHONY: demo test venv clean benchmark train browser brain-shapes

venv: $(STAMP)

# torch is pinned here (the CPU wheel of this machine); the package metadata keeps a range.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,viz,slicer,train]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m shmoareg.demo --output-dir $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The brain-shaped training label map of train_brainshapes_cpu.yaml: fsaverage5's surfaces (from nilearn's wheel, fetched
# from PyPI once into benchmarks/out/sources) filled into tissue classes. Not a subject that benchmarks/compare.py scores.
# The second one, of the experiment recipe train_brainshapes_macaque_cpu.yaml: the INIA19 macaque template's tissue
# classes at human size (Debian's mricron-data, fetched once into benchmarks/out/sources; not a compare.py brain).
BRAIN_SHAPES := runs/data/fsaverage5_labels.nii.gz
MACAQUE_SHAPES := runs/data/inia19_labels.nii.gz
brain-shapes: $(BRAIN_SHAPES) $(MACAQUE_SHAPES)
$(BRAIN_SHAPES): benchmarks/brain_shapes.py | $(STAMP)
	$(BIN)/python benchmarks/brain_shapes.py --output $@
$(MACAQUE_SHAPES): benchmarks/macaque_shapes.py | $(STAMP)
	$(BIN)/python benchmarks/macaque_shapes.py --output $@

# Continue training the shipped shmoareg recipe (real anatomy; needs ../shared/data) from its last checkpoint
# (runs/ of the config), at low priority on one thread so the machine stays usable; `make train
# TRAIN_CONFIG=Resources/configs/train_unet_cpu.yaml` for the U-Net baseline (the brain-shaped recipes need
# `make brain-shapes` first). Stop it with Ctrl-C: the last checkpoint (every 250 steps) is kept.
TRAIN_CONFIG ?= Resources/configs/train_anatomy_cpu.yaml
train: $(STAMP)
	OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 nice -n 19 $(BIN)/python -m shmoareg train --config $(TRAIN_CONFIG) --resume

# Debian's headless Chromium for the batch report's browser test (Testing/engine/test_batch.py skips it without
# Chromium). Needs root: `sudo make browser`. `make test` itself never needs root.
browser:
	apt-get update
	apt-get install -y chromium

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_register.py

clean:
	rm -rf $(VENV) $(DEMO_DIR)
