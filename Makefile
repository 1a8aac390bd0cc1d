# Entry points for a fresh machine: `make run` and `make test` set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
export PATH := $(abspath $(BIN)):$(PATH)

BINARY_VENV := .venv-binary
BINARY_STAMP := $(BINARY_VENV)/.installed

.PHONY: venv test-venv run run-commands test test-campaign test-binary test-docker binary bench-xdist bench-scheduler bench-recovery bench-failover bench-eta bench-load bench-throughput clean

# swarmctl and pytest: the example suites run under this venv's python3, first on PATH.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e . pytest
	touch $(STAMP)

# The test tools on top (pytest-trio, hypothesis, playwright, ...).
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

venv: $(STAMP)

test-venv: $(TEST_STAMP)

# The example suite fails three tests on purpose, so exit code 1 is the expected result here.
run: venv
	$(BIN)/swarmctl run examples/pytest-suite --junitxml .swarmctl-example.xml --json .swarmctl-example.json; \
	  status=$$?; [ $$status -le 1 ] || exit $$status; \
	  echo "(3 failures are deliberate: see examples/pytest-suite/README.md)"

run-commands: venv
	$(BIN)/swarmctl run examples/command-suite; status=$$?; [ $$status -le 1 ] || exit $$status

# Two pytest-xdist workers run most tests, since e2e tests mostly wait on processes and sleeps;
# tests marked serial run alone afterwards.
test: test-venv
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not serial"
	$(BIN)/python -m pytest -q -m serial

# 2,000 seeded fault schedules of each kind (consensus with a hash chain, consensus with the
# coordinator state, the whole replicated coordinator), where the default test run has 300 of each.
test-campaign: test-venv
	SWARMCTL_CONSENSUS_SCHEDULES=2000 SWARMCTL_COORDINATOR_SCHEDULES=2000 $(BIN)/python -m pytest -q -n auto \
	  tests/sim/test_consensus_sim.py tests/sim/test_coordinator_sim.py

# The single-file binary. Its venv holds swarmctl's runtime dependencies and PyInstaller only;
# the swarmctl package itself is taken from this checkout (see the spec file).
$(BINARY_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BINARY_VENV)
	$(BINARY_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BINARY_VENV)/bin/python -m pip install --quiet . pyinstaller
	touch $(BINARY_STAMP)

binary: $(BINARY_STAMP)
	$(BINARY_VENV)/bin/pyinstaller --noconfirm --clean --log-level WARN \
	  --distpath dist --workpath build/pyinstaller packaging/pyinstaller/swarmctl.spec
	@ls -l dist/swarmctl

# Builds the binary when it is older than the sources, then runs it as every role.
test-binary: test-venv
	$(BIN)/python -m pytest -q tests/packaging

# Builds the Docker images on a dockerd of its own and runs the compose file (needs root and apt-get).
test-docker: binary
	bash packaging/scripts/test-docker.sh

bench-xdist: test-venv
	$(BIN)/python bench/xdist.py

bench-scheduler: test-venv
	$(BIN)/python bench/scheduler.py

bench-recovery: test-venv
	$(BIN)/python bench/recovery.py

bench-failover: test-venv
	$(BIN)/python bench/failover.py

bench-eta: test-venv
	$(BIN)/python bench/eta.py

# 200 simulated executors x 4 slots against a real coordinator, 1,000 to 100,000 tests (a few minutes).
bench-load: test-venv
	$(BIN)/python bench/load.py

# The same harness with tests of about a millisecond, so the coordinator, not the tests,
# bounds the results committed per second.
bench-throughput: test-venv
	$(BIN)/python bench/load.py --no-curve --median-ms 1 --sigma 0.5 --cap-s 0.05 --output bench/results/throughput.json

clean:
	rm -rf $(VENV) $(BINARY_VENV) build dist *.egg-info .pytest_cache .swarmctl-example.*
