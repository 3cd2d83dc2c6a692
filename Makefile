# Two commands do everything: `make demo` and `make test`. Both create/refresh .venv first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)
STORE  ?= ./hvt-store

.PHONY: venv demo configs test test-fast lint bench-model clean

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

# ARGS go to the demo: make demo ARGS="--augment-on decode" (python -m pipelines.demo --help lists them)
ARGS ?=
demo: $(STAMP)
	HVT_STORE=$${HVT_STORE:-$(STORE)} $(PY) -m pipelines.demo $(ARGS)

# configs/ from the code that defines them (the demo's and the paper's); a test fails while they differ
configs: $(STAMP)
	$(PY) -m pipelines.configs write configs

# Test files run on TEST_WORKERS processes (pytest-xdist), a file's tests in one process: they share its
# module fixtures (a local Ray, a Prefect server). The slowest tests are listed at the end.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

test: $(STAMP)
	$(PYTEST)

# The development loop: everything that starts no server, Ray cluster or whole flow (under 3 minutes here).
test-fast: $(STAMP)
	$(PYTEST) -m "not integration"

lint: $(STAMP)
	$(VENV)/bin/ruff check hvt pipelines tests bench

clean:
	rm -rf $(VENV) hvt-store .pytest_cache

# --- Operator targets (docs/PREFECT.md): a local Prefect server, the deployments, a worker, a Ray head.
PREFECT_PORT ?= 4200
PREFECT_API  ?= http://127.0.0.1:$(PREFECT_PORT)/api
POOL         ?= hvt-local
RAY_PORT     ?= 6389
RAY_DASHBOARD_PORT ?= 8265
PREFECT_ENV  := PREFECT_API_URL=$(PREFECT_API) PREFECT_SERVER_ANALYTICS_ENABLED=false RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled}

.PHONY: prefect-server deploy prefect-worker ray-head dev-stack-up dev-stack-down

prefect-server: $(STAMP)  ## foreground; Ctrl-C stops it
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

deploy: $(STAMP)  ## the work pool and every deployment in prefect.yaml
	$(PREFECT_ENV) $(VENV)/bin/prefect work-pool create $(POOL) --type process --overwrite \
	    --base-job-template infra/prefect/process-work-pool.json
	$(PREFECT_ENV) $(VENV)/bin/prefect --no-prompt deploy --all

prefect-worker: $(STAMP)  ## foreground; Ctrl-C twice stops it
	$(PREFECT_ENV) PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/prefect worker start --pool $(POOL) --type process

ray-head: $(STAMP)  ## foreground local Ray head with the Jobs API on 127.0.0.1:$(RAY_DASHBOARD_PORT); Ctrl-C stops it
	RAY_AUTH_MODE=$${RAY_AUTH_MODE:-disabled} PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/ray start --head --block \
	    --node-ip-address=127.0.0.1 --port=$(RAY_PORT) --dashboard-host=127.0.0.1 \
	    --dashboard-port=$(RAY_DASHBOARD_PORT) --include-dashboard=true --disable-usage-stats

dev-stack-up: $(STAMP)
	infra/dev-stack.sh up

dev-stack-down:
	infra/dev-stack.sh down
