# Two commands do all the set-up on a fresh machine:
#   make demo   creates .venv if missing, trains a baseline and a 90%-sparse population on digits,
#               and audits them into a report
#   make test   creates .venv if missing and runs the test suite
#   make lab    adds JupyterLab to .venv and opens notebooks/ in it
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
POPULATION ?= 16
RUNS ?= runs/digits

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
	$(BIN)/pie-audit train --dataset digits --arch small-cnn --population $(POPULATION) --sparsity 0 --out $(RUNS)/baseline
	$(BIN)/pie-audit train --dataset digits --arch small-cnn --population $(POPULATION) --sparsity 0.9 --out $(RUNS)/pruned-90
	$(BIN)/pie-audit compare $(RUNS)/baseline $(RUNS)/pruned-90 --out reports/digits-pruned-90 ; \
	  status=$$?; [ $$status -le 1 ] || exit $$status; \
	  echo "Report: reports/digits-pruned-90/report.html"

test: venv
	$(BIN)/python -m pytest -q

# JupyterLab is for people, not for CI (nbclient runs the notebooks there): installed on demand.
lab: venv
	$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(JUPYTERLAB)"
	$(BIN)/jupyter lab notebooks/

bench: venv
	$(BIN)/python bench/compare.py
	$(BIN)/python bench/train_population.py

clean:
	rm -rf runs reports/*/ .pytest_cache
