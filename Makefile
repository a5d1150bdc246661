# Two entry points that work on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DATA ?= data/synth
DEMO_RUN  ?= runs/demo
DEMO_BUNDLE ?= bundles/demo
DEMO_NEW  ?= data/synth-new

.PHONY: demo test install lint clean bench-check arm64-check arm64-check-test

$(STAMP): pyproject.toml
	@echo "installing edgecls[all,dev] into $(VENV): about 2 minutes"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@test -f $(DEMO_DATA)/labels.csv || $(BIN)/edgecls data synth $(DEMO_DATA) --n 600 --seed 0
	$(BIN)/edgecls data inspect $(DEMO_DATA)
	$(BIN)/edgecls train $(DEMO_DATA) --out $(DEMO_RUN) --strategy finetune --img-size 160 --epochs 4 --lr 4e-3 --force
	$(BIN)/edgecls evaluate $(DEMO_RUN) $(DEMO_DATA) --split test
	$(BIN)/edgecls export $(DEMO_RUN) --target onnx --target onnx-int8 --target openvino --target openvino-int8 \
		--data $(DEMO_DATA) --out $(DEMO_BUNDLE) --force
	@test -d $(DEMO_NEW) || $(BIN)/edgecls data synth $(DEMO_NEW) --n 8 --seed 1
	$(BIN)/edgecls predict $(DEMO_BUNDLE) $(DEMO_NEW) --format table --truth $(DEMO_NEW)/labels.csv
	@echo "checkpoint: $(DEMO_RUN)/best.pt   report: $(DEMO_RUN)/report.md   plots: $(DEMO_RUN)/*.png"
	@echo "bundle:     $(DEMO_BUNDLE) (manifest.json, parity.json, README.md)   true labels of the new images: $(DEMO_NEW)/labels.csv"

# The exporter tests run in their own process: torch's ONNX export segfaulted there after the training/runtime
# tests had loaded OpenVINO and DDP state in the same interpreter (open bug, see the issue notes).
EXPORT_TESTS := tests/test_export.py tests/test_export_cli.py tests/test_bench.py tests/test_data_spec_export.py \
	tests/test_executorch.py

# The Ray tests (a local Ray for the session, a two-node cluster, a local S3 server) run in their own process too, so
# that Ray's processes do not share the CPUs with the training tests.
SCALE_TESTS := tests/test_scale.py

test: $(STAMP)
	$(BIN)/python -m pytest -q $(addprefix --ignore=,$(EXPORT_TESTS) $(SCALE_TESTS))
	$(BIN)/python -m pytest -q $(EXPORT_TESTS)
	$(BIN)/python -m pytest -q $(SCALE_TESTS)

# Re-runs the published backends benchmark (needs ../shared/datasets/aquarium; --build trains and exports the bundles
# that are missing, ~15 min) and compares it with benchmarks/results/backends-*.json: exit 1 when a row differs beyond
# noise. Speed is only judged on the machine the results came from; elsewhere only accuracy is.
bench-check: $(STAMP)
	$(BIN)/python benchmarks/backends.py --build --check --targets benchmarks/targets.yaml

# The torch-free runtime on arm64 under emulation (needs root and apt-get install debootstrap qemu-user-static
# binfmt-support): a Debian bookworm arm64 root in ~/.cache/edgecls/arm64 (built once, ~10 min), edgecls[runtime,openvino]
# from PyPI's aarch64 wheels, then doctor, predict and parity inside on a bundle made here, on an emulated Cortex-A76
# (ARM64_CPU: cortex-a76, cortex-a72, neoverse-n1, max). Without ARM64_BUNDLE a small synthetic Lite0 bundle is built
# in ARM64_DIR; the published run (benchmarks/results/arm64-check.json) used the aquarium Lite0 bundle:
#   make arm64-check ARM64_BUNDLE=bundles/aq-lite0 ARM64_DATA=../shared/datasets/aquarium \
#     ARM64_IMAGES=../shared/datasets/aquarium/test/images ARM64_PARITY_IMAGES=40 \
#     ARM64_OUT=benchmarks/results/arm64-check.json
ARM64_DIR ?= /tmp/edgecls-arm64
ARM64_BUNDLE ?= $(ARM64_DIR)/bundle
ARM64_DATA ?= $(ARM64_DIR)/data
ARM64_IMAGES ?= $(ARM64_DIR)/new
ARM64_CPU ?= cortex-a76
ARM64_OUT ?= $(ARM64_DIR)/report.json
arm64-check: $(STAMP)
	@test -f $(ARM64_BUNDLE)/manifest.json || test "$(ARM64_BUNDLE)" != "$(ARM64_DIR)/bundle" || { \
		{ test -f $(ARM64_DIR)/data/labels.csv || $(BIN)/edgecls data synth $(ARM64_DIR)/data --n 240 --seed 0; } && \
		{ test -d $(ARM64_DIR)/new || $(BIN)/edgecls data synth $(ARM64_DIR)/new --n 8 --seed 1; } && \
		$(BIN)/edgecls train $(ARM64_DIR)/data --out $(ARM64_DIR)/run --img-size 128 --epochs 3 --lr 4e-3 --force && \
		$(BIN)/edgecls export $(ARM64_DIR)/run --target onnx --target onnx-int8 --target openvino \
			--target openvino-int8 --data $(ARM64_DIR)/data --calib-size 64 --out $(ARM64_DIR)/bundle --force \
			--allow-parity-failure; }
	nice -n 19 $(BIN)/python benchmarks/arm64_check.py $(ARM64_BUNDLE) $(ARM64_DATA) --images $(ARM64_IMAGES) \
		--qemu-cpu $(ARM64_CPU) --step-timeout 1800 --out $(ARM64_OUT) \
		$(if $(ARM64_PARITY_IMAGES),--parity-images $(ARM64_PARITY_IMAGES))

# The same through the opt-in test (not in `make test`): a tiny bundle, the runtime extra only
arm64-check-test: $(STAMP)
	EDGECLS_ARM64_CHECK=1 $(BIN)/python -m pytest -q -m arm64 tests/test_arm64.py

lint: $(STAMP)
	$(BIN)/ruff check edgecls tests benchmarks

clean:
	rm -rf $(VENV) runs bundles data .pytest_cache
