# facepipe: `make demo` and `make test` set everything up on a fresh machine (idempotent; a second run is quick).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
CACHE ?= .cache
# torch first, explicitly: the CPU/CUDA build is a per-machine choice (Dockerfile.lambda takes the CPU wheels).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
WEIGHTS := $(CACHE)/models/facenet-casia-webface.pt
# The ONNX files the functions run (`facepipe models export`: MTCNN's three networks and InceptionResnetV1).
MODELS_DIR := $(CACHE)/models
MODELS := $(MODELS_DIR)/.exported
PHOTOS := $(CACHE)/photos/.complete
INSTALLED := $(VENV)/.installed
VIDEO ?=
ENROLL ?=
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck bench weights models photos clean system-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(INSTALLED): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[edge,cloud,models,local,dev]'
	touch $@

install: $(INSTALLED)

$(WEIGHTS): | $(INSTALLED) $(PHOTOS)
	$(BIN)/facepipe models prepare --out $@ --download-dir $(CACHE)/downloads --verify-photos $(CACHE)/photos --models-dir $(MODELS_DIR)

weights: $(WEIGHTS)

# Re-exported when the weights or the export code change; files already up to date are kept (their sidecars say so).
$(MODELS): $(WEIGHTS) cloud/operator/models/export.py cloud/operator/models/onnx_export.py cloud/operator/models/mtcnn_export.py \
           cloud/operator/models/resnet_export.py | $(INSTALLED) $(PHOTOS)
	$(BIN)/facepipe models export --weights $(WEIGHTS) --models-dir $(MODELS_DIR) --photos $(CACHE)/photos
	touch $@

models: $(MODELS)

$(PHOTOS): tools/fetch_sample_photos.py | $(INSTALLED)
	$(BIN)/python tools/fetch_sample_photos.py --dest $(CACHE)/photos --downloads $(CACHE)/downloads
	touch $@

photos: $(PHOTOS)

# Debian packages the edge tests drive for real (an MQTT broker, a headless browser for the status page and the
# demo's screenshot): installed when running as root (CI), else their tests skip with the reason (CI=true: fail).
system-tools:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note:$$missing not installed (needs root): the tests that need them skip"; fi; \
	fi

lint: $(INSTALLED)
	$(BIN)/ruff check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

test: $(INSTALLED) $(WEIGHTS) $(MODELS) $(PHOTOS) system-tools lint typecheck
	FACEPIPE_TEST_WEIGHTS=$(WEIGHTS) FACEPIPE_TEST_MODELS=$(MODELS_DIR) FACEPIPE_TEST_PHOTOS=$(CACHE)/photos $(BIN)/pytest $(PYTEST_ARGS)

demo: $(INSTALLED) $(WEIGHTS) $(MODELS) $(PHOTOS) system-tools
	$(BIN)/python -m cloud.emulator.demo --models-dir $(MODELS_DIR) --photos $(CACHE)/photos $(if $(VIDEO),--video $(VIDEO)) $(if $(ENROLL),--enroll-dir $(ENROLL))

# `facepipe bench` first: on the demo clip (2.5 faces a frame), on a clip filmed from the packaged one-face photos,
# then on a clip filmed from ../shared's group photos (4 faces a frame) when they are there.
ONE_FACE = $(addprefix $(CACHE)/photos/,face_recognition/obama2.jpg face_recognition/obama3.jpg face_recognition/biden.jpg matplotlib/grace_hopper.jpg)
SHARED_GROUPS ?= ../shared/testdata/faces/group
bench: $(INSTALLED) $(WEIGHTS) $(MODELS) $(PHOTOS)
	mkdir -p $(CACHE)/bench
	$(BIN)/python -m cloud.bench.engines --models-dir $(MODELS_DIR) --weights $(WEIGHTS) --json $(CACHE)/bench/engines.json
	$(BIN)/facepipe bench --engine onnx,torch --models-dir $(MODELS_DIR) --weights $(WEIGHTS) --photos $(CACHE)/photos --json $(CACHE)/bench/demo.json --chart $(CACHE)/bench/demo.png
	$(BIN)/facepipe bench --engine onnx,torch --models-dir $(MODELS_DIR) --weights $(WEIGHTS) --film $(ONE_FACE) --json $(CACHE)/bench/one-face.json --chart $(CACHE)/bench/one-face.png
	if [ -d $(SHARED_GROUPS) ]; then $(BIN)/facepipe bench --models-dir $(MODELS_DIR) --film $(SHARED_GROUPS)/*.jpg --limit 50 \
	  --json $(CACHE)/bench/groups.json --chart $(CACHE)/bench/groups.png; fi
	$(BIN)/python -m cloud.bench.handlers --weights $(WEIGHTS) --photos $(CACHE)/photos
	$(BIN)/python -m cloud.bench.edge --weights $(WEIGHTS) --photos $(CACHE)/photos
	$(BIN)/python -m cloud.bench.runtime --weights $(WEIGHTS) --photo $(CACHE)/photos/face_recognition/obama2.jpg
	$(BIN)/python -m cloud.bench.queue_depth
	if [ -d ../shared/testdata/faces/identities ]; then $(BIN)/python -m cloud.bench.track_decision --models-dir $(MODELS_DIR) --held-out; fi

clean:
	rm -rf $(VENV) $(CACHE) .pytest_cache .mypy_cache .ruff_cache
