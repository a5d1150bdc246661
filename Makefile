# Two entry points that work on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DATA ?= data/synth
DEMO_RUN  ?= runs/demo

.PHONY: demo test install lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@test -f $(DEMO_DATA)/labels.csv || $(BIN)/edgecls data synth $(DEMO_DATA) --n 600 --seed 0
	$(BIN)/edgecls data inspect $(DEMO_DATA)
	@rm -rf $(DEMO_RUN)
	$(BIN)/edgecls train $(DEMO_DATA) --out $(DEMO_RUN) --strategy finetune --img-size 160 --epochs 4 --lr 4e-3
	$(BIN)/edgecls evaluate $(DEMO_RUN) $(DEMO_DATA) --split test
	@echo "checkpoint: $(DEMO_RUN)/best.pt   report: $(DEMO_RUN)/report.md   plots: $(DEMO_RUN)/*.png"

# The exporter tests run in their own process: torch's ONNX export segfaulted there after the training/runtime
# tests had loaded OpenVINO and DDP state in the same interpreter (open bug, see the issue notes).
EXPORT_TESTS := tests/test_export.py tests/test_export_cli.py tests/test_bench.py

test: $(STAMP)
	$(BIN)/python -m pytest -q $(addprefix --ignore=,$(EXPORT_TESTS))
	$(BIN)/python -m pytest -q $(EXPORT_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check edgecls tests benchmarks

clean:
	rm -rf $(VENV) runs data .pytest_cache
