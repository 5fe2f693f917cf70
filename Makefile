# The two commands of the README:
#   make run PROFILE=quick   run the notebooks in order with params/<PROFILE>/ (executed copies in outputs/<PROFILE>/)
#   make test                the notebooks executed under nbval with the smoke profile, then the tests that read
#                            their run stores (the smoke main job resumes from them instead of training again), while
#                            every other test runs in a second pytest process
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

# Two pytest processes at once, one per core (a test never races the clock, so sharing the cores is safe), each
# with one BLAS/OpenMP thread (two processes of two spinning threads each would oversubscribe the two cores):
#   A: nbval's smoke notebooks, in order, then the tests that need their run stores (TESTS_A, which also holds the
#      only Ray tests and the kill -9 tests, so two Ray clusters never start at once); its log is printed at the end
#   B: every other test, printed as it runs
TESTS_A := tests/test_notebooks.py tests/test_browser.py tests/test_crash_safety.py tests/test_ray.py
PYTEST := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest -p no:cacheprovider \
          --durations=15
test: install
	rm -rf build/nbval build/test-a.log
	$(BIN)/python -m rlinit_lib.run_notebooks --profile smoke --prepare-only build/nbval --outputs-root build/nbval/outputs
	@( $(PYTEST) build/nbval --nbval-lax && RLINIT_SMOKE_STORES=build/nbval/outputs $(PYTEST) $(TESTS_A) ) \
	  > build/test-a.log 2>&1 & a=$$!; \
	$(PYTEST) tests $(addprefix --ignore=,$(TESTS_A)); b=$$?; \
	wait $$a; a=$$?; echo "==== A: nbval's notebooks, then $(TESTS_A) ===="; cat build/test-a.log; \
	echo "make test: A exit $$a, B exit $$b"; [ $$a -eq 0 ] && [ $$b -eq 0 ]

# the executed profile as a static site: build/report/$(PROFILE)/index.html (make run PROFILE=... first)
report: install
	$(BIN)/python -m rlinit_lib.report_site --profile $(PROFILE)

# Jupyter refuses to run as root (containers) unless told; the flag is added only for root
lab: install
	$(BIN)/jupyter lab notebooks/ $(if $(filter 0,$(shell id -u)),--allow-root,)
