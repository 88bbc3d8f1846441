# The two commands of the README: `make demo` and `make test`. Each creates
# .venv, installs the pinned dependencies, builds (incrementally), then runs.
PYTHON_SYSTEM ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BUILD := build
export OMP_WAIT_POLICY ?= PASSIVE
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: all build demo test test-cpp test-py test-asan fuzz bench clean system-deps

all: build

# Debian packages the C++ side needs (GoogleTest, Ninja; clang for fuzzing).
$(VENV)/.system-deps:
	@bash tools/install_system_deps.sh
	@mkdir -p $(VENV) && touch $@

system-deps: $(VENV)/.system-deps

$(VENV)/.python-deps: requirements.txt | $(VENV)/.system-deps
	test -x $(PY) || $(PYTHON_SYSTEM) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# The editable install registers the package and its torch.backends entry
# point; later builds only re-run the (incremental) CMake build.
$(VENV)/.installed: $(VENV)/.python-deps pyproject.toml setup.py
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $@

build: $(VENV)/.installed
	TORCH_DEVICE_BACKEND_AUTOLOAD=0 $(PY) setup.py -q build_ext --inplace >/dev/null

test: build
	$(MAKE) test-cpp test-py test-asan

test-cpp:
	cd $(BUILD) && ctest --output-on-failure -j2

test-py:
	$(PY) -m pytest -q tests

demo: build
	$(PY) examples/demo.py
	$(PY) examples/qat_digits.py

test-asan: build
	sh tools/test_asan.sh
	sh tools/test_asan_python.sh

fuzz: $(VENV)/.system-deps
	sh tools/fuzz.sh

# Benchmarks measure what users meet: OpenMP's default wait policy.
bench: build
	env -u OMP_WAIT_POLICY $(PY) benchmarks/run_all.py

clean:
	rm -rf $(BUILD) build-* torch_tfmbs/_C*.so
