.PHONY: test demo lint bench

test:  ## set up .venv and run the whole test suite on SQLite, then PostgreSQL
	bash scripts/test.sh
