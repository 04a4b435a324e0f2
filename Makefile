# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv if missing and runs the digits study (studies/digits.toml): a dense
#               population and three pruned ones, trained and audited into a sweep report
#   make test   creates .venv if missing and runs the test suite
#   make lab    adds JupyterLab to .venv and opens notebooks/ in it
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STUDY ?= studies/digits.toml

JUPYTERLAB ?= jupyterlab==4.6.6

.PHONY: demo test venv bench clean lab

venv: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: venv
	$(BIN)/pie-audit study run $(STUDY) ; status=$$?; [ $$status -le 1 ] || exit $$status

test: venv
	$(BIN)/python -m pytest -q

# JupyterLab is for people, not for CI (nbclient runs the notebooks there): installed on demand.
lab: venv
	$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(JUPYTERLAB)"
	$(BIN)/jupyter lab notebooks/

bench: venv
	$(BIN)/python bench/compare.py
	$(BIN)/python bench/train_population.py
	$(BIN)/python bench/study.py

clean:
	rm -rf runs reports/*/ .pytest_cache
