# The README's commands. `make demo` and `make test` each set up .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SAMPLE := issues/2025-08-01-north-korea.yaml

.PHONY: demo test lint golden bench clean

$(BIN)/newsletter: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## Set up, render the sample issue and send it to the example list through the outbox.
demo: $(BIN)/newsletter
	$(BIN)/newsletter render $(SAMPLE)
	$(BIN)/newsletter send $(SAMPLE) --to subscribers.example.csv --dry-run
	$(BIN)/newsletter send $(SAMPLE) --to subscribers.example.csv --yes

## Set up and run the whole test suite, the linters and the type checker.
test: $(BIN)/newsletter
	scripts/system-deps
	$(BIN)/ruff format --check newsletter tests bench
	$(BIN)/ruff check newsletter tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -n 2 --dist loadfile

## Regenerate the golden files of the sample issue after a deliberate template change.
golden: $(BIN)/newsletter
	NEWSLETTER_UPDATE_GOLDEN=1 $(BIN)/pytest -q tests/test_golden.py

bench: $(BIN)/newsletter
	$(BIN)/python bench/render.py
	$(BIN)/python bench/send.py

clean:
	rm -rf build outbox .newsletter $(VENV)
