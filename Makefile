# The two commands the README promises: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench bench-model soak clean

venv: $(STAMP)

$(STAMP): requirements.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: venv
	$(PY) -m pytest -q test

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
	rm -rf $(VENV) build install log demo_output .pytest_cache
