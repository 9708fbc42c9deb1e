# The README's two commands: `make book` and `make test`.
# Both create the virtual environment on first use (about 2 minutes here).

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= default
# Real data for the tests and the chapters; override on the command line or in
# the environment. The defaults point at this project's shared data folder.
DATA    ?= ../shared/data
LOCALPROPS_GTSRB    ?= $(if $(wildcard $(DATA)/gtsrb/gtsrb32.npz),$(abspath $(DATA)/gtsrb/gtsrb32.npz))
LOCALPROPS_IMAGENET ?= $(if $(wildcard $(DATA)/imagenet-sample),$(abspath $(DATA)/imagenet-sample))
export LOCALPROPS_GTSRB LOCALPROPS_IMAGENET

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: book test lint install mathjax bench student clean help

help:
	@echo "make book [PROFILE=ci|default|paper|my.yml]  execute the notebooks and render _build/html"
	@echo "make test                              run the test suite"
	@echo "make lint                              check lib/, tests/ and notebooks/ with ruff"
	@echo "make bench                             run the benchmarks (python -m localprops.tools.bench)"
	@echo "make student                           the chapters without solutions: _build/student/ and _build/student.zip"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[imagenet,book,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(STAMP)

mathjax: $(STAMP)
	bash scripts/fetch_mathjax.sh

book: $(STAMP) mathjax
	$(BIN)/python -m localprops.tools.build --profile $(PROFILE)

test: $(STAMP) mathjax
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check lib tests notebooks

bench: $(STAMP)
	$(BIN)/python -m localprops.tools.bench

student: $(STAMP)
	$(BIN)/python -m localprops.tools.student --out _build/student --zip _build/student.zip

clean:
	rm -rf _build
