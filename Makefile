# Two entry points (see README): `make demo` runs the main job, `make test` runs the test suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# Chainer 7.8.1 is an sdist built in an isolated environment: pip < 25.3 applies PIP_CONSTRAINT
# there, pip >= 26 applies only build constraints (PIP_BUILD_CONSTRAINT). Set both; each pip
# ignores the variable it does not know.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_BUILD_CONSTRAINT := $(CURDIR)/constraints.txt

.PHONY: install test demo data benchmark clean

$(VENV)/.installed: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade 'pip' 'setuptools<74' wheel
	$(PY) -m pip install -q -e '.[test,mpi]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

# Fashion-MNIST (full 70k IDX files) from Debian's package, when missing and apt is available.
FASHION := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
data:
	@if [ ! -e $(FASHION) ] && command -v apt-get >/dev/null; then \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist); fi

demo: install data
	$(PY) examples/mnist/train_mnist.py --dataset fashion-mnist --arch mlp --out result/mnist

benchmark: install
	$(PY) benchmarks/run.py --out result/benchmark.json

clean:
	rm -rf $(VENV) result
