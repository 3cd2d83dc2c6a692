# Two commands do everything: `make demo` and `make test`. Both create/refresh .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
STORE  ?= ./hvt-store

.PHONY: venv demo test lint bench-model clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade --quiet "pip>=24" wheel
	# torch first: the CPU wheel where there is no GPU, the CUDA build where there is one.
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	    $(PIP) install --quiet "torch>=2.4,<2.15"; \
	else \
	    $(PIP) install --quiet torch==2.13.0; \
	fi
	$(PIP) install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	HVT_STORE=$${HVT_STORE:-$(STORE)} $(PY) -m pipelines.demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check hvt pipelines tests bench

clean:
	rm -rf $(VENV) hvt-store .pytest_cache
