# The two commands of the README:
#   make run PROFILE=quick   run the notebooks in order with params/<PROFILE>/ (executed copies in outputs/<PROFILE>/)
#   make test                the notebooks executed under nbval with the smoke profile, then every test (the smoke
#                            main job among them resumes from nbval's run stores instead of training again)
#   make report PROFILE=...  the executed profile as a static HTML site (build/report/<PROFILE>/index.html)
# Both create .venv and install the package on first use (python3 -m venv + pip; no conda needed).
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= quick
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: install run test lab report clean-smoke

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,lab,ray]'
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python -m rlinit_lib.run_notebooks --profile $(PROFILE)

test: install
	rm -rf build/nbval
	$(BIN)/python -m rlinit_lib.run_notebooks --profile smoke --prepare-only build/nbval --outputs-root build/nbval/outputs
	RLINIT_SMOKE_STORES=build/nbval/outputs $(BIN)/python -m pytest build/nbval tests --nbval-lax -p no:cacheprovider --durations=25

# the executed profile as a static site: build/report/$(PROFILE)/index.html (make run PROFILE=... first)
report: install
	$(BIN)/python -m rlinit_lib.report_site --profile $(PROFILE)

# Jupyter refuses to run as root (containers) unless told; the flag is added only for root
lab: install
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)
