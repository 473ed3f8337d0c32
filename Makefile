# The two commands a newcomer needs: `make run` (the whole pipeline on the embedded default)
# and `make test` (the test suite). Both create .venv and install the project when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The scheduler's separate environment (orchestration/airflow/requirements.txt): Airflow 3 pins
# SQLAlchemy and FastAPI releases that Feast and MLflow refuse.
AIRFLOW_VENV  := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.installed
AIRFLOW_REQS  := orchestration/airflow/requirements.txt orchestration/airflow/constraints.txt

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export FEAST_USAGE := False
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint install airflow clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(AIRFLOW_VENV)/bin/python:
	$(PYTHON) -m venv $(AIRFLOW_VENV)

$(AIRFLOW_STAMP): $(AIRFLOW_REQS) | $(AIRFLOW_VENV)/bin/python
	$(AIRFLOW_VENV)/bin/pip install --quiet --quiet \
		-r orchestration/airflow/requirements.txt -c orchestration/airflow/constraints.txt
	touch $(AIRFLOW_STAMP)

airflow: $(AIRFLOW_STAMP)

run: $(STAMP)
	$(BIN)/churnops demo

test: $(STAMP) $(AIRFLOW_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/generate_bench.py

clean:
	rm -rf data mlruns/mlflow.db mlruns/artifacts reports
