# rayac — the two quickstart commands are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DEMO_DIR ?= runs/demo-$(shell date +%Y%m%d-%H%M%S)
# Local Ray stays on loopback, sends no usage stats, and keeps its socket paths short.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export RAY_USAGE_STATS_ENABLED := 0
export RAY_AUTH_MODE ?= disabled

.PHONY: setup system-deps demo test lint bench soak clean

setup: $(STAMP)

# torch first, pinned: its CPU wheel is on this machine's disk; an unpinned torch pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,bench,atari,envpool,mujoco,box2d,optuna,export,serve]"
	rm -f $(VENV)/.installed-*
	touch $@

demo: setup
	$(VENV)/bin/rayac train --preset a2c_cartpole --workers 2 --run-dir $(DEMO_DIR)
	$(VENV)/bin/rayac evaluate $(DEMO_DIR) --episodes 10 --gif $(DEMO_DIR)/agent.gif

# The local-cluster test (tests/e2e) runs `ray up` over ssh on loopback: it needs sshd and rsync (Debian).
# The dashboard's browser test (tests/api/test_dashboard.py) drives Debian's headless chromium + chromedriver.
system-deps:
	@command -v /usr/sbin/sshd >/dev/null && command -v rsync >/dev/null || \
	  (apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq openssh-server rsync >/dev/null)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium chromium-driver >/dev/null)

# Two pytest workers, a test file each at a time: most tests wait on Ray, a server or a subprocess more than they
# compute, so two at once take ~2/3 of the time on 2 cores (the api tests retry a port a Ray process took meanwhile).
test: setup system-deps
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

lint: setup
	$(VENV)/bin/ruff check rayac api tests benchmarks
	$(VENV)/bin/ruff format --check rayac api tests benchmarks

bench: setup
	$(PY) benchmarks/bench_core.py

# ~3 min: act at 64 connections for 60 s while jobs are submitted, listed and stopped; exits 1 on any 5xx.
# Not part of `make test` (timing lives in benchmarks/). Needs wrk (Debian: apt-get install wrk).
soak: setup
	$(PY) benchmarks/bench_soak.py

clean:
	rm -rf $(VENV) runs
