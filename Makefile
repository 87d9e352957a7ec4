# One target per habit: setup, demo, test, bench, lint.
.PHONY: setup demo test bench lint format

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/streamcl demo

test:
	bash scripts/test.sh

bench: setup
	.venv/bin/python -m bench all

lint: setup
	.venv/bin/ruff check stream learners memory tests bench
	.venv/bin/ruff format --check stream learners memory tests bench

format: setup
	.venv/bin/ruff format stream learners memory tests bench
	.venv/bin/ruff check --fix stream learners memory tests bench
