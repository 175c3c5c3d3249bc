# Two front doors: `make demo` and `make test`. Each creates the virtual environment when it is missing and installs
# only when requirements.txt or setup.cfg changed (stamp files keyed on their hash).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONDONTWRITEBYTECODE := 1

REQ_HASH := $(shell cat requirements.txt | sha256sum | cut -c1-12)
PKG_HASH := $(shell cat requirements.txt setup.cfg pyproject.toml | sha256sum | cut -c1-12)
DEPS_STAMP := $(VENV)/.deps-$(REQ_HASH)
# The editable install points the venv at this checkout, so its stamp lives in the checkout and names the venv.
PKG_STAMP := .install-stamp-$(PKG_HASH)-$(shell echo "$(abspath $(VENV))" | sha256sum | cut -c1-8)

DEMO_CONFIG := configs/quickstart_shapes_segmentation.py
DEMO_DIR := work_dirs/demo

DETECTION_CONFIG := configs/quickstart_shapes_detection.py
DETECTION_DIR := work_dirs/demo_detection

.PHONY: install demo demo-detection test lint clean gpu-wheels

install: $(PKG_STAMP)

$(DEPS_STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -r requirements.txt
	touch $@

$(PKG_STAMP): $(DEPS_STAMP) setup.cfg pyproject.toml
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	rm -f .install-stamp-*
	touch $@

# Train the segmentation quick start on generated shapes, evaluate it on the held-out test split, predict test images.
demo: install
	$(PY) tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_DIR) --resume auto
	$(PY) tools/test.py $(DEMO_CONFIG) $(DEMO_DIR)/best.pth --work-dir $(DEMO_DIR) --out $(DEMO_DIR)/test_metrics.json
	$(PY) tools/infer.py $(DEMO_CONFIG) $(DEMO_DIR)/best.pth 'data/shapes/segmentation/images/test/0000?.png' \
		--out $(DEMO_DIR)/infer
	@echo "demo done: $(DEMO_DIR)/ has curves.png, test_metrics.json, predictions/ and infer/"

# Train the detection quick start (a small DSOD from scratch), report its held-out test mAP, draw boxes on test images.
demo-detection: install
	$(PY) tools/train.py $(DETECTION_CONFIG) --work-dir $(DETECTION_DIR) --resume auto
	$(PY) tools/test.py $(DETECTION_CONFIG) $(DETECTION_DIR)/best.pth --work-dir $(DETECTION_DIR) \
		--out $(DETECTION_DIR)/test_metrics.json
	$(PY) tools/infer.py $(DETECTION_CONFIG) $(DETECTION_DIR)/best.pth \
		'data/shapes_detection/detection/images/test/0000?.png' --out $(DETECTION_DIR)/infer
	@echo "demo-detection done: $(DETECTION_DIR)/ has curves.png, test_metrics.json, predictions/ and infer/"

test: install
	$(PY) -m ruff check densevision tools tests configs
	DENSEVISION_VENV=$(abspath $(VENV)) $(PY) -m pytest -n 2 --dist loadfile

lint: install
	$(PY) -m ruff check densevision tools tests configs

# Wheels of the packages a lent GPU machine lacks (Python 3.12, x86-64), at this venv's versions, for
# tools/gpu_checks.sh: carry .gpu there (git ignores it via .git/info/exclude).
GPU_WHEELS := albumentations albucore pydantic pydantic-core annotated-types typing-inspection simsimd stringzilla pycocotools
GPU_PLATFORMS := manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64
gpu-wheels: install
	grep -qx '/.gpu/' .git/info/exclude || echo /.gpu/ >> .git/info/exclude
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		$(addprefix --platform ,$(GPU_PLATFORMS)) -d .gpu/whl \
		$$($(PY) -m pip show $(GPU_WHEELS) | awk '/^Name:/ {name = $$2} /^Version:/ {print name "==" $$2}')

clean:
	rm -rf .install-stamp-* work_dirs/demo work_dirs/demo_detection
