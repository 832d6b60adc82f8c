.PHONY: test demo lint bench bench-quick

test:  ## set up .venv, run the whole test suite on SQLite, then PostgreSQL
	bash scripts/test.sh

demo:  ## set up .venv, the example project on SQLite, then run server + worker + demo jobs
	bash scripts/demo.sh

lint:  ## ruff, mypy, import layers, migrations check
	bash scripts/lint.sh

bench:  ## the benchmark suite on PostgreSQL (see bench/README.md)
	bash scripts/bench.sh

bench-quick:  ## a small run of the benchmark suite, to prove it runs (no timing assertions)
	bash scripts/bench.sh --quick
