# Works on a fresh machine with Python >= 3.11: `make test` and `make run` build their own virtual environment.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default (the file this workplace ships); on a GPU machine: make TORCH='torch --index-url https://download.pytorch.org/whl/cu124'
TORCH ?= torch==2.13.0
MODEL ?= random:tiny
# Random weights never stop talking: their clips are capped short. With real weights: MAX_CLIP_SECONDS=14.
MAX_CLIP_SECONDS ?= 1
OUT ?= out/samples
PORT ?= 50051
METRICS_PORT ?= 9100
PROTO_SRC := protos/chorus/synth/v1/synth.proto

.PHONY: venv test run serve protos clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[synth,orchestrator,clients,test]'
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The whole job on this machine: the sample corpus in clients/samples/ read aloud into $(OUT)/<document>.mp3, with a
# report. MODEL=suno/bark-small MAX_CLIP_SECONDS=14 for the real weights (downloaded from the hub on first use).
run: venv
	$(BIN)/chorus run clients/samples --out '$(OUT)' --model '$(MODEL)' --max-clip-seconds $(MAX_CLIP_SECONDS)

# Only the synth server, on :$(PORT) (metrics on :$(METRICS_PORT)).
serve: venv
	$(BIN)/chorus-synth --model '$(MODEL)' --port $(PORT) --metrics-port $(METRICS_PORT)

# Regenerates the committed stubs from the .proto (tests/synth/test_protos.py fails when they differ).
protos: venv
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=protos --pyi_out=protos --grpc_python_out=protos $(PROTO_SRC)

# Every benchmark in bench/ (synth throughput, orchestrator CPU per job, encoding, memory; ~10 minutes on 2 cores):
# raw rows appended to bench/results.json, tables rewritten in bench/RESULTS.md. pydub (the reference's encoder, to
# compare with) gets its ffmpeg from imageio-ffmpeg. On a GPU: make bench BENCH_ARGS='--model random:bark --devices cuda:0'
.PHONY: bench
bench: venv
	$(BIN)/pip install --quiet -e '.[synth,orchestrator,clients,test,bench]'
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
