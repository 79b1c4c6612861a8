# genofed: `make demo` and `make test` work from a fresh clone on Debian, Ubuntu or
# Raspberry Pi OS. They create .venv, install the Python extras and the system packages that
# are missing (Mosquitto, bcftools, tabix), then do the job.
#
# Two environments, the two install profiles: .venv is the coordinator's (and the developer's):
# torch, and onnxruntime-training-cpu 1.19.2 on x86_64 (stock onnxruntime elsewhere; the two
# install the same module, never both). .venv-device is the device's: genofed[agent] with
# stock onnxruntime, no torch. `make test` runs the whole suite in .venv, exports bundles there
# into build/device-bundles, and runs tests/device in .venv-device on those bundles.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.genofed-installed
DEVICE_VENV    := .venv-device
DEVICE_STAMP   := $(DEVICE_VENV)/.genofed-installed
DEVICE_BUNDLES := build/device-bundles
# The CPU build of PyTorch, used only by the coordinator (export). Override TORCH_SPEC or add
# PIP_EXTRA="--index-url ..." to pick another build.
TORCH_SPEC ?= torch==2.13.0
APT_PACKAGES := mosquitto mosquitto-clients bcftools tabix samtools minimap2 pbsim openssl \
  plink2 python-pyvcf-examples postgresql systemd chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

MYPY_TARGETS := -p genofed.agent -p genofed.aggregator -p genofed.broker -p genofed.cli -p genofed.export -p genofed.fleet \
  -p genofed.models -p genofed.privacy -p genofed.protocol -p genofed.sim -p genofed.transport \
  -m genofed.config -m genofed.errors -m genofed.atomic

# The reader's corpus of real public files (tests/unit/test_public_corpus.py): Debian's
# python-pyvcf-examples (APT_PACKAGES), the VCFs in Debian's r-bioc-variantannotation (1000
# Genomes chr22, Complete Genomics; the .deb is unpacked here, R is not installed) and the PGS
# Catalog's test scoring files, which ship in pgscatalog-core's source distribution
# (downloaded here with pip). Nothing of it is committed.
CORPUS     := build/corpus
PGS_SDIST  := pgscatalog-core==1.1.1
VA_DEB     := r-bioc-variantannotation

.PHONY: all demo test test-device test-aarch64 lint bench system-deps venv clean corpus

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
	@# An older .venv held stock onnxruntime; it and onnxruntime-training-cpu overwrite each
	@# other's files, so remove both before the coordinator extra installs the training build.
	@if [ "$$(uname -m)" = x86_64 ] && $(BIN)/pip show -q onnxruntime >/dev/null 2>&1; then \
	  $(BIN)/pip uninstall -y -q onnxruntime onnxruntime-training-cpu; fi
	$(BIN)/pip install -q $(PIP_EXTRA) -e ".[coordinator,dev]"
	touch $(STAMP)

$(DEVICE_STAMP): pyproject.toml
	$(MAKE) system-deps
	$(PYTHON) -m venv $(DEVICE_VENV)
	$(DEVICE_VENV)/bin/pip install -q $(PIP_EXTRA) -e ".[agent]" "pytest>=8"
	touch $(DEVICE_STAMP)

venv: $(STAMP)

demo: $(STAMP)
	rm -rf demo-out
	$(BIN)/genofed demo --out demo-out --report demo-out/report.json

corpus: $(CORPUS)/.stamp

$(CORPUS)/.stamp: $(STAMP)
	@command -v plink2 >/dev/null && [ -d /usr/share/doc/python3-vcf/test ] || $(MAKE) system-deps
	rm -rf $(CORPUS) && mkdir -p $(CORPUS)
	$(BIN)/pip download -q --no-binary :all: --no-deps "$(PGS_SDIST)" -d $(CORPUS)
	tar -xzf $(CORPUS)/pgscatalog_core-*.tar.gz -C $(CORPUS) --strip-components=2 \
	  --wildcards '*/tests/data/*'
	cd $(CORPUS) && { apt-get download -q $(VA_DEB) || \
	  { $(SUDO) apt-get update -qq && apt-get download -q $(VA_DEB); }; } && \
	  dpkg-deb -x $(VA_DEB)_*.deb variantannotation
	touch $@

# The coordinator profile exports (and signs) the parity bundles with PyTorch's losses once;
# the whole suite runs on them in .venv, then tests/device runs on them in .venv-device.
test: $(STAMP) $(DEVICE_STAMP) $(CORPUS)/.stamp
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || $(MAKE) system-deps
	rm -rf $(DEVICE_BUNDLES)
	$(BIN)/python tests/support/bundles.py $(DEVICE_BUNDLES)
	GENOFED_DEVICE_BUNDLES="$(CURDIR)/$(DEVICE_BUNDLES)" $(BIN)/pytest -q -n 2 --dist loadgroup
	GENOFED_DEVICE_BUNDLES="$(CURDIR)/$(DEVICE_BUNDLES)" GENOFED_DEVICE_PROFILE=1 \
	  $(DEVICE_VENV)/bin/pytest -q tests/device

# The device profile alone, on freshly exported bundles.
test-device: $(STAMP) $(DEVICE_STAMP)
	rm -rf $(DEVICE_BUNDLES)
	$(BIN)/python tests/support/bundles.py $(DEVICE_BUNDLES)
	GENOFED_DEVICE_BUNDLES="$(CURDIR)/$(DEVICE_BUNDLES)" GENOFED_DEVICE_PROFILE=1 \
	  $(DEVICE_VENV)/bin/pytest -q tests/device

# The device profile on aarch64 (a 64-bit Raspberry Pi or Jetson) under qemu user-mode
# emulation, on freshly exported bundles: tests/aarch64.sh makes an arm64 Debian rootfs in
# build/aarch64-root once and runs tests/device in a chroot there. Needs root or sudo; not in
# `make test`.
test-aarch64: $(STAMP)
	rm -rf $(DEVICE_BUNDLES)
	$(BIN)/python tests/support/bundles.py $(DEVICE_BUNDLES)
	GENOFED_DEVICE_BUNDLES="$(CURDIR)/$(DEVICE_BUNDLES)" bash tests/aarch64.sh

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
