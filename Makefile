# ssmfab: `make demo` runs the main job against the local sandbox fleet; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SANDBOX_DIR ?= $(CURDIR)/.sandbox-demo

.PHONY: venv sshd demo test unit typecheck bench mutate models clean

$(BIN)/inv: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/inv

# OpenSSH's server, which the sandbox runs one of per instance: installed when missing (apt-get or dnf).
sshd:
	@.ci/install-sshd

# Start the sandbox (moto + ssmmessages + real sshd + a plugin; installs sshd when missing), run the main job
# through SSM tunnels (StartSession + the plugin, the default mode), show the output, and always tear the
# sandbox down.
demo: venv sshd
	@$(BIN)/inv sandbox.up --dir $(SANDBOX_DIR)
	@PATH="$(CURDIR)/$(BIN):$$PATH"; . $(SANDBOX_DIR)/env.sh; export SSMFAB_CONFIG=demo/ssmfab.toml; status=0; \
	  rm -rf demo-logs; \
	  echo; echo '$$ inv hosts --tag web'; inv hosts --tag web || status=$$?; \
	  echo; echo "$$ inv run --tag web 'uname -sr; uptime'"; inv run --tag web 'uname -sr; uptime' || status=$$?; \
	  echo; echo '$$ inv deploy --tag web --dry-run'; inv deploy --tag web --dry-run || status=$$?; \
	  echo; echo '$$ inv deploy --tag web'; inv deploy --tag web || status=$$?; \
	  echo; echo '$$ inv fetch-logs web-1'; inv fetch-logs web-1 || status=$$?; \
	  find demo-logs -type f | sort | while read f; do echo "--- $$f"; cat "$$f"; done; \
	  echo; $(BIN)/inv sandbox.down --dir $(SANDBOX_DIR); exit $$status

# PYTEST_ARGS='--plugin PATH' (or SSMFAB_SANDBOX_PLUGIN=PATH) runs the integration tests through AWS's plugin.
test: venv sshd
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	$(BIN)/mypy

unit: venv
	$(BIN)/python -m pytest -q -m 'not integration'

typecheck: venv
	$(BIN)/mypy

# Side-by-side benchmark against OpenSSH and plain Fabric on a sandbox (needs sshd; ~15 min on 2 cores).
# Prints the table and writes bench/results/latest.json and latest.png. BENCH_ARGS="--repeat 1" for a quick look.
bench: venv
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

# Mutation testing (not part of CI: about an hour on 2 cores): mutmut mutates the modules listed in
# pyproject.toml [tool.mutmut], runs the tests that reach each mutant, and lists the mutants no test killed.
# MUTATE_ARGS narrows the run to mutant names, e.g. MUTATE_ARGS='ssmfab.hostkeys*'; MUTATE_CHILDREN bounds the
# mutants tested at once (one process each). See docs/mutation.md.
MUTATE_CHILDREN ?= 2
mutate: venv
	$(BIN)/pip install --quiet -e '.[test,mutate]'
	$(BIN)/mutmut run --max-children $(MUTATE_CHILDREN) $(MUTATE_ARGS) || true
	@echo; echo "Surviving mutants (mutmut show NAME for the diff):"
	@$(BIN)/mutmut results

# Regenerate ssmfab/models (the slice of botocore's EC2 model ssmfab uses) after upgrading botocore.
models: venv
	$(BIN)/python -m ssmfab.awsmodels

clean:
	-$(BIN)/inv sandbox.down --dir $(SANDBOX_DIR) 2>/dev/null
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache mutants
