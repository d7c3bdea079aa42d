# fraudrt: the two commands are `make parity` and `make test`; everything else is a thin alias.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
FRAUDRT := $(BIN)/fraudrt
NODE_DIR := .fraudrt/node
STAMP := $(VENV)/.installed

.PHONY: setup node-deps browser test parity bench lint typecheck clean \
	platform-parity-stack-up platform-parity-stack-down platform-parity-stack-status platform-parity-bootstrap \
	platform-run-new platform-oracle-sync platform-oracle-pack platform-oracle-check-strict platform-oracle-stream-sort \
	platform-sr-run-reuse platform-wsp-ready-consumer-once platform-ig-service-parity \
	platform-run-report platform-governance-query platform-env-conformance platform-operate-parity-status

setup: $(STAMP) node-deps browser

# The run report's HTML is tested in a real headless Chromium: Debian's package, never a browser download.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "warning: /usr/bin/chromium missing; install Debian's chromium package (as root: apt-get install chromium)"; fi; }

$(STAMP): pyproject.toml
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found (fraudrt needs Python >= 3.11)"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[substrate,test,dev,bench]'
	touch $(STAMP)

node-deps: $(NODE_DIR)/node_modules/kinesalite/package.json

$(NODE_DIR)/node_modules/kinesalite/package.json: fraudrt/substrate/node/package.json fraudrt/substrate/node/package-lock.json
	@command -v node >/dev/null || { echo "error: Node.js not found (kinesalite needs Node >= 18)"; exit 1; }
	mkdir -p $(NODE_DIR)
	cp fraudrt/substrate/node/package.json fraudrt/substrate/node/package-lock.json $(NODE_DIR)/
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

test: setup
	$(BIN)/nox -s lint typecheck tests --no-venv

parity: setup
	$(BIN)/nox -s parity --no-venv

bench: setup
	$(BIN)/nox -s bench --no-venv

lint: setup
	$(BIN)/nox -s lint --no-venv

typecheck: setup
	$(BIN)/nox -s typecheck --no-venv

clean:
	-$(FRAUDRT) substrate down
	rm -rf .nox .pytest_cache .mypy_cache .ruff_cache

# ---- the seed's target names (spine_green_v0_run_process_flow), as aliases of fraudrt commands
platform-parity-stack-up: setup
	$(FRAUDRT) substrate up
platform-parity-bootstrap: setup
	$(FRAUDRT) substrate bootstrap
platform-parity-stack-status: setup
	$(FRAUDRT) substrate status
platform-parity-stack-down: setup
	$(FRAUDRT) substrate down
platform-run-new: setup
	$(FRAUDRT) run new
platform-oracle-sync: setup
	$(FRAUDRT) oracle sync
platform-oracle-pack: setup
	$(FRAUDRT) oracle pack
platform-oracle-check-strict: setup
	$(FRAUDRT) oracle check --strict
platform-oracle-stream-sort: setup
	$(FRAUDRT) oracle stream-sort
platform-sr-run-reuse: setup
	$(FRAUDRT) sr ready --reuse
platform-wsp-ready-consumer-once: setup
	$(FRAUDRT) wsp ready-consumer --once
platform-ig-service-parity: setup
	$(FRAUDRT) ig serve
platform-run-report: setup
	$(FRAUDRT) report
platform-governance-query: setup
	$(FRAUDRT) governance query --limit $${GOVERNANCE_QUERY_LIMIT:-20}
platform-env-conformance: setup
	$(FRAUDRT) conformance
platform-operate-parity-status: setup
	$(FRAUDRT) pack status all

PACKS := control-ingress:control_ingress rtdl-core:rtdl_core rtdl-decision:rtdl_decision_lane case-labels:case_labels obs-gov:obs_gov
define pack_targets
.PHONY: platform-operate-$(1)-up platform-operate-$(1)-down platform-operate-$(1)-status
platform-operate-$(1)-up: setup
	$(FRAUDRT) pack up $(2)
platform-operate-$(1)-down: setup
	$(FRAUDRT) pack down $(2)
platform-operate-$(1)-status: setup
	$(FRAUDRT) pack status $(2)
endef
$(foreach p,$(PACKS),$(eval $(call pack_targets,$(word 1,$(subst :, ,$(p))),$(word 2,$(subst :, ,$(p))))))
