.PHONY: start test lint format bench

start:  ## install, prepare and run the web server and workers
	bash scripts/start.sh

test:  ## install, lint and run the whole suite against PostgreSQL
	bash scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

bench:
	.venv/bin/python bench/run.py
