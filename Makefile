# fleet: `make demo` and `make test` work alone on a fresh Debian machine.
VENV := .venv
BIN := $(VENV)/bin
EXAMPLE := fleet-repo-example
PYTEST_ARGS ?=

.PHONY: bootstrap demo test test-quick lint lint-fast bench schemas dashboards docs clean

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@scripts/demo.sh

# The quick checks; mypy (its files are pyproject's) comes after them here, and in `make test`
# it is one of the tests (tests/test_typing.py), run beside the others.
lint-fast: bootstrap
	$(BIN)/ruff check reconciler providers lab tests bench deploy scripts
	$(BIN)/ruff format --check reconciler providers lab tests bench deploy scripts
	$(BIN)/lint-imports

lint: lint-fast
	$(BIN)/mypy

test: lint-fast
	@# Tests start fleet hundreds of times: compile its bytecode once, even where the
	@# environment says not to write any (PYTHONDONTWRITEBYTECODE), instead of in every process.
	@$(BIN)/python -m compileall -q reconciler providers lab tests
	@# Four workers on two cores: the lab tests spend most of their time waiting on simulators.
	@# Each file runs on one worker, the longest files first (tests/conftest.py).
	$(BIN)/python -m pytest -n 4 --dist loadfile --no-loadscope-reorder --durations=10 $(PYTEST_ARGS)

# The edit loop: every test but the lab suites that apply and wait (marked slow); no lint.
test-quick: bootstrap
	$(BIN)/python -m pytest -n 4 --dist loadfile --no-loadscope-reorder -m "not slow" $(PYTEST_ARGS)

bench: bootstrap
	$(BIN)/python bench/bench_validate.py
	$(BIN)/python bench/bench_ipmi.py
	$(BIN)/python bench/bench_plan.py
	$(BIN)/python bench/bench_libvirt.py
	$(BIN)/python bench/bench_kube.py
	$(BIN)/python bench/bench_ansible.py
	$(BIN)/python bench/bench_controller.py
	$(BIN)/python bench/bench_pr.py
	$(BIN)/python bench/bench_drift_pr.py
	$(BIN)/python bench/bench_ui.py
	$(BIN)/python bench/bench_store.py

schemas: bootstrap
	$(BIN)/fleet schema --write schemas/
	$(BIN)/fleet schema openapi --write schemas/
	$(BIN)/fleet schema --write $(EXAMPLE)/schemas/

# The Grafana dashboard is code (deploy/grafana/dashboard.py); its JSON is generated, and
# tests/test_observability.py fails when the two differ.
dashboards: bootstrap
	$(BIN)/python deploy/grafana/dashboard.py --write deploy/grafana/fleet-controller.json

# The documentation site: the reference pages are generated (from schemas/ and the diagnostic codes
# the checks emit), then MkDocs builds docs/ into site/ in strict mode, so a broken link fails it.
# tests/test_docs.py builds it too, and fails when a generated page is stale.
docs: bootstrap
	$(BIN)/python scripts/docs_reference.py --write
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache site
