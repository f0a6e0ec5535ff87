# The two commands a newcomer needs: `make run` and `make test`. Both set up what they need.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install tools bench bench-storm clean

run: $(STAMP)  ## Run the exporter on :9469 in development mode with the example config
	# bulk cancellations are polled from `simulate`'s stand-in for the Inngest REST API on :9470
	INNGEST_DEV=$${INNGEST_DEV-1} EXPORTER_STATE_DIR=$${EXPORTER_STATE_DIR-state} \
		INNGEST_API_BASE_URL=$${INNGEST_API_BASE_URL-http://127.0.0.1:9470} \
		$(BIN)/inngest-cancellation-exporter serve --config $${EXPORTER_CONFIG-examples/config.yaml}

test: $(STAMP) tools  ## Install everything the tests need, then run the whole suite
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)  ## Performance benchmark: every figure side by side (installs Debian's wrk if missing); QUICK=1 for a smoke run
	$(BIN)/python -m bench.performance $(if $(QUICK),--quick) $(BENCH_ARGS)
bench-storm: $(STAMP)  ## One cancel event ends 2,000 runs on Inngest's own server: how long until the exporter counted them
	./scripts/install-inngest.sh
	$(BIN)/python -m bench.real_server_storm $(BENCH_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

tools:  ## Tools the tests drive for real: Debian's prometheus (promtool), helm 3 and Inngest's server (built from the Go module proxy, cached) in .tools/bin
	./scripts/install-test-tools.sh

clean:
	rm -rf $(VENV) state .pytest_cache
