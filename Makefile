.PHONY: start test lint format bench soak scaleout

start:  ## install, prepare and run the web server and workers
	bash scripts/start.sh

test:  ## install, lint and run the whole suite against PostgreSQL
	bash scripts/test.sh

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff check --fix . && .venv/bin/ruff format .

bench:  ## every benchmark, then BENCHMARKS.md's machine section and the plots (ARGS=--quick: a short bench_service)
	bash -c 'source scripts/_venv.sh && ensure_wrk'
	.venv/bin/python bench/run.py $(ARGS)

soak:  ## the long fault, overload and fuzz tests (marked soak), stopped after 45 minutes
	SOAK=1 timeout 2700 .venv/bin/python -m pytest -m soak -q -s -p no:cacheprovider

scaleout:  ## two web servers and two task clusters on one PostgreSQL, one lost; two inference clusters
	.venv/bin/python -m pytest tests/config/test_scale_out.py tests/providers/test_serving_cluster.py -q -s -p no:cacheprovider
