# Two commands on a fresh machine:  make demo   (set up + run the demo)   make test   (checks)
PYTHON ?= python3.11
# make GPU=1 …: the same targets in .venv-gpu, built from requirements-gpu.txt (faiss-gpu).
GPU ?= 0
ifeq ($(GPU),1)
VENV := .venv-gpu
REQUIREMENTS := requirements-gpu.txt
else
VENV := .venv
REQUIREMENTS := requirements.txt
endif
BIN := $(VENV)/bin
CORES ?= 2
OPENCV_PIN := $(shell grep -E '^opencv-python-headless==' requirements-opencv.txt)

.PHONY: demo demo-data test lint unit-tests browser clean-demo gpu-check benchmark-data

# The environment: pinned requirements, then exactly one OpenCV build. ultralytics pulls the GUI
# build and both builds unpack into the same cv2/ folder, so both are removed and the headless
# one reinstalled without dependencies. Last, the copydetect package
# (pyproject.toml), editable: a regular install would copy the code into the venv, and the rules
# and scripts would go on importing that copy after every edit until the next reinstall.
$(VENV)/.installed: $(REQUIREMENTS) requirements-opencv.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r $(REQUIREMENTS)
	$(BIN)/pip uninstall --quiet --yes opencv-python opencv-python-headless
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps $(OPENCV_PIN)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/python -c "import copydetect, cv2, faiss, h5py, snakemake; cv2.SIFT_create()"
	touch $@

# The demo: a labeled benchmark synthesized from scikit-image's photographs, then the workflow.
demo: $(VENV)/.installed
	$(BIN)/snakemake --configfile config/demo.yaml --cores $(CORES) synthesize_queries
	$(BIN)/snakemake --configfile config/demo.yaml --cores $(CORES)
	$(BIN)/python workflow_scripts/print_run_summary.py results

test: $(VENV)/.installed lint unit-tests

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules/ examples/
	$(BIN)/snakemake --lint --configfile config/demo.yaml

unit-tests: $(VENV)/.installed browser
	$(BIN)/python -m pytest -q

# On a CUDA machine: build .venv-gpu, then prove the GPU path (benchmarks/gpu_check.py: the demo
# with --resources gpu=2 and a few YOLO epochs; asserts from the job logs that torch and faiss ran
# on leased, distinct GPUs; writes GPU throughput to benchmarks/results.md). Refuses on a CPU.
# GPU_PYTHON=python3: use that interpreter (torch with CUDA, faiss-gpu, the pins' other packages
# already there, e.g. carried as wheels) instead of building .venv-gpu, for a machine with no
# package index. GPU_CHECK_ARGS: more options (--scratch DIR, --results FILE, --epochs N).
GPU_CORES ?= 16
GPU_PYTHON ?=
GPU_CHECK_ARGS ?=
gpu-check:
ifeq ($(GPU_PYTHON),)
	$(MAKE) GPU=1 .venv-gpu/.installed
	.venv-gpu/bin/python benchmarks/gpu_check.py --cores $(GPU_CORES) $(GPU_CHECK_ARGS)
else
	$(GPU_PYTHON) benchmarks/gpu_check.py --cores $(GPU_CORES) $(GPU_CHECK_ARGS)
endif

# Headless Chromium (Debian's package) for the gallery's real-browser test in tests/test_gallery.py.
browser:
	@if [ "$$COPYDETECT_SKIP_BROWSER" = 1 ]; then \
		echo "make browser: COPYDETECT_SKIP_BROWSER=1, not installing chromium"; \
	elif ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
		if [ "$$(id -u)" -ne 0 ]; then \
			echo "make browser: chromium is not installed and this is not root; run" >&2; \
			echo "  sudo apt-get install -y --no-install-recommends chromium" >&2; \
			echo "or set COPYDETECT_SKIP_BROWSER=1 to skip the browser test" >&2; \
			exit 1; \
		fi; \
		apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends chromium; \
	fi

# The harder accuracy benchmark benchmarks/work/bench2 (benchmarks/make_benchmark_data.py
# --graphics: wallpapers, photographs, clip art, icons, line drawings, figures and text pages from
# Debian packages; the synthesizer's disc21 edit set). Installs the packages (and the fonts the
# edits draw with) as root; as a user, it prints the apt-get line and stops.
BENCH_ARGS := --graphics --edit-set disc21
benchmark-data: $(VENV)/.installed
	@apt="$$($(BIN)/python benchmarks/make_benchmark_data.py $(BENCH_ARGS) --apt-packages)"; \
	if ! dpkg -s $$apt >/dev/null 2>&1; then \
		if [ "$$(id -u)" -ne 0 ]; then \
			echo "make benchmark-data: run as root or first:" >&2; \
			echo "  sudo apt-get install -y --no-install-recommends $$apt" >&2; \
			exit 1; \
		fi; \
		apt-get update && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y --no-install-recommends $$apt; \
	fi
	$(BIN)/python benchmarks/make_benchmark_data.py $(BENCH_ARGS) \
		--sources-dir benchmarks/work/bench2_sources --out benchmarks/work/bench2

clean-demo:
	rm -rf results .snakemake
