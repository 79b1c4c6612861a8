# genofed: `make demo` and `make test` work from a fresh clone on Debian, Ubuntu or
# Raspberry Pi OS. They create .venv, install the Python extras and the system packages that
# are missing (Mosquitto, bcftools, tabix), then do the job.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.genofed-installed
# The CPU build of PyTorch, used only by the coordinator (export). Override TORCH_SPEC or add
# PIP_EXTRA="--index-url ..." to pick another build.
TORCH_SPEC ?= torch==2.13.0
APT_PACKAGES := mosquitto mosquitto-clients bcftools tabix
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

MYPY_TARGETS := -p genofed.agent -p genofed.broker -p genofed.cli -p genofed.export \
  -p genofed.models -p genofed.protocol -p genofed.sim \
  -m genofed.config -m genofed.errors -m genofed.atomic

.PHONY: all demo test lint bench system-deps venv clean

all: test

system-deps:
	@missing=""; \
	for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt-get:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	$(MAKE) system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(BIN)/pip install -q $(PIP_EXTRA) -e ".[agent,coordinator,dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	rm -rf demo-out
	$(BIN)/genofed demo --out demo-out --report demo-out/report.json

test: $(STAMP)
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || $(MAKE) system-deps
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	@# mypy does not follow setuptools' package-dir mapping; a link tree shows it the
	@# repository as the package `genofed`.
	@mkdir -p build/typecheck && ln -sfn "$(CURDIR)" build/typecheck/genofed
	MYPYPATH=build/typecheck $(BIN)/mypy --cache-dir build/mypy-cache $(MYPY_TARGETS)

bench: $(STAMP)
	$(BIN)/genofed bench

clean:
	rm -rf build demo-out .pytest_cache .mypy_cache .ruff_cache benchmarks/results/*.json
