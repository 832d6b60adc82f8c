.PHONY: test demo lint bench bench-quick bench-compare bench-compare-quick chaos chaos-quick

test:  ## set up .venv, run the whole test suite on SQLite, then PostgreSQL, then MariaDB
	bash scripts/test.sh

demo:  ## set up .venv, the example project on SQLite, then run server + worker + demo jobs
	bash scripts/demo.sh

lint:  ## ruff, mypy, import layers, migrations check
	bash scripts/lint.sh

bench:  ## the benchmark suite on PostgreSQL (see bench/README.md)
	bash scripts/bench.sh

bench-quick:  ## a small run of the benchmark suite, to prove it runs (no timing assertions)
	bash scripts/bench.sh --quick

bench-compare:  ## asyncjobs against django-tasks-db, procrastinate, Celery+Redis and a raw psycopg baseline (installs the peers in bench/.peers)
	bash scripts/bench.sh --compare

bench-compare-quick:  ## the same, 1 run of 500 jobs: proves the harness runs (CI)
	bash scripts/bench.sh --compare --quick

chaos:  ## 5,000 jobs, 3 workers, random SIGKILLs, a PostgreSQL restart: proves nothing is lost
	bash scripts/chaos.sh

chaos-quick:  ## a shorter chaos run (CI)
	bash scripts/chaos.sh --jobs 1500 --kill-every 1.5
