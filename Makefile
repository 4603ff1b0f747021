# facepipe: `make demo` and `make test` set everything up on a fresh machine (idempotent; a second run is quick).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
CACHE ?= .cache
# torch first, explicitly: the CPU/CUDA build is a per-machine choice (Dockerfile.lambda takes the CPU wheels).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
WEIGHTS := $(CACHE)/models/facenet-casia-webface.pt
PHOTOS := $(CACHE)/photos/.complete
INSTALLED := $(VENV)/.installed
VIDEO ?=
ENROLL ?=
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck bench weights photos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(INSTALLED): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[edge,cloud,local,dev]'
	touch $@

install: $(INSTALLED)

$(WEIGHTS): | $(INSTALLED) $(PHOTOS)
	$(BIN)/facepipe models prepare --out $@ --download-dir $(CACHE)/downloads --verify-photos $(CACHE)/photos

weights: $(WEIGHTS)

$(PHOTOS): tools/fetch_sample_photos.py | $(INSTALLED)
	$(BIN)/python tools/fetch_sample_photos.py --dest $(CACHE)/photos --downloads $(CACHE)/downloads
	touch $@

photos: $(PHOTOS)

lint: $(INSTALLED)
	$(BIN)/ruff check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

test: $(INSTALLED) $(WEIGHTS) $(PHOTOS) lint typecheck
	FACEPIPE_TEST_WEIGHTS=$(WEIGHTS) FACEPIPE_TEST_PHOTOS=$(CACHE)/photos $(BIN)/pytest $(PYTEST_ARGS)

demo: $(INSTALLED) $(WEIGHTS) $(PHOTOS)
	$(BIN)/python -m cloud.local.demo --weights $(WEIGHTS) --photos $(CACHE)/photos $(if $(VIDEO),--video $(VIDEO)) $(if $(ENROLL),--enroll-dir $(ENROLL))

bench: $(INSTALLED) $(WEIGHTS) $(PHOTOS)
	$(BIN)/python -m benchmarks.handlers --weights $(WEIGHTS) --photos $(CACHE)/photos
	$(BIN)/python -m benchmarks.edge --weights $(WEIGHTS) --photos $(CACHE)/photos
	$(BIN)/python -m benchmarks.runtime --weights $(WEIGHTS) --photo $(CACHE)/photos/face_recognition/obama2.jpg

clean:
	rm -rf $(VENV) $(CACHE) .pytest_cache .mypy_cache .ruff_cache
