# mailflow: `make demo` runs the main job on the embedded defaults; `make test` runs the whole suite.
# Both bootstrap their own virtualenv in .venv from the lock file (requirements.lock).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-all bench lint lock docs clean

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "mailflow needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[dev,postgres]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mailflow demo

test: $(STAMP)
	bash scripts/install-test-deps.sh
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; fi; exit $$rc

test-all: $(STAMP)
	bash scripts/install-test-deps.sh
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	bash scripts/install-test-deps.sh
	$(PY) -m benchmarks $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

lock:
	$(VENV)/bin/pip-compile -q --extra dev --extra postgres --extra demo --strip-extras -o requirements.lock pyproject.toml

docs: $(STAMP)
	$(PY) -m mailflow.configdoc

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
