# The two commands the README promises: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A second ROS distro: the node-level tests against the ros-kilted-* wheels (docs/install.md).
KILTED_VENV ?= .venv-kilted
KPY := $(KILTED_VENV)/bin/python
KSTAMP := $(KILTED_VENV)/.installed
NODE_TESTS := test/test_node.py test/test_faults.py test/test_decode.py test/test_params.py
# The version floors: setup.py's lowest allowed versions (uv --resolution lowest-direct) with
# the torch already installed kept as it is (docs/install.md, Version floors).
FLOORS_VENV ?= .venv-floors
FPY := $(FLOORS_VENV)/bin/python
FSTAMP := $(FLOORS_VENV)/.installed
FLOORS_TESTS ?= test
UV_FLAGS ?=
# Versions without wheels for this Python are skipped rather than built from source.
BINARY_ONLY := $(foreach p,torch numpy pillow scipy onnx onnxruntime safetensors tokenizers,\
    --only-binary $(p))
# pytest.ini sets the per-test timeout (pytest-timeout), so a hang fails with the test's name.
PYTEST := -m pytest -q --durations=15

.PHONY: venv test test-kilted test-floors demo bench bench-model soak clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: venv
	$(PY) $(PYTEST) test

# requirements.txt without its ros-jazzy-* wheels, then the Kilted ones.
$(KSTAMP): requirements.txt requirements-kilted.txt setup.py
	test -x $(KPY) || $(PYTHON) -m venv $(KILTED_VENV)
	grep -v '^ros-' requirements.txt > $(KILTED_VENV)/requirements-no-ros.txt
	$(KPY) -m pip install -q -r $(KILTED_VENV)/requirements-no-ros.txt -r requirements-kilted.txt
	$(KPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(KSTAMP)

test-kilted: $(KSTAMP)
	$(KPY) $(PYTEST) $(NODE_TESTS)

$(FSTAMP): requirements.txt setup.py $(STAMP)
	test -x $(FPY) || $(PYTHON) -m venv $(FLOORS_VENV)
	$(FPY) -m pip install -q torch==2.13.0
	$(FPY) -c "import torch; print('torch==' + torch.__version__)" > $(FLOORS_VENV)/constraints.txt
	grep '^ros-jazzy-' requirements.txt | grep -v 'flake8\|ament-package' > $(FLOORS_VENV)/ros.txt
	$(PY) -m uv pip install -q --python $(FPY) --resolution lowest-direct \
	    --index-strategy unsafe-best-match $(BINARY_ONLY) $(UV_FLAGS) \
	    -c $(FLOORS_VENV)/constraints.txt -r $(FLOORS_VENV)/ros.txt \
	    -e '.[test,onnx,marigold-ensemble]'
	touch $(FSTAMP)

test-floors: $(FSTAMP)
	$(FPY) $(PYTEST) $(FLOORS_TESTS)

demo: venv
	$(PY) -m densepred_ros.cli demo --output demo_output

bench: venv
	$(PY) scripts/bench_alignment.py

# Not in `make test`: the real-size Lotus architecture (random weights) on this CPU, every
# configuration side by side in one run (about 50 minutes on 2 cores; README, Acceleration).
bench-model: venv
	$(PY) -m densepred_ros.cli bench --resolutions 256,384,512 --warmup 0 --repeats 1 \
	    --configs ours,ours_fp32,authors_fp32,marigold,ours_onnxruntime,authors_autocast \
	    --config-timeout 1500 --json bench_model.json

# Not in `make test`: 10 000 frames at 30 Hz with lidar into the node (about 6 minutes).
soak: venv
	$(PY) scripts/soak.py --frames 10000 --rate 30 --json soak.json

clean:
	rm -rf $(VENV) $(KILTED_VENV) $(FLOORS_VENV) build install log demo_output .pytest_cache
