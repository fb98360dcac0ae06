# Common tasks. `make demo` and `make test` are the two README commands.
.PHONY: help install demo test test-sqlite lint format typecheck bench bench-http bench-cpu bench-instructions migrate

help:
	@echo "make demo       start the demo: Cloudinary stand-in + S3 emulator, SQLite, in-process jobs; prints the logins"
	@echo "make test       run the whole test suite on SQLite and on PostgreSQL"
	@echo "make test-sqlite  only the SQLite run (fast loop)"
	@echo "make lint       ruff, mypy, import-linter (layers), provider-name rule, eslint"
	@echo "make format     ruff format + autofix"
	@echo "make bench      run the in-process benchmarks under bench/"
	@echo "make bench-http the presign path as deployed: gunicorn + PostgreSQL + Redis + wrk"
	@echo "make bench-cpu  the same, sampled with perf: CPU per request by process and system call"
	@echo "make bench-instructions  the presign path's own instructions per request (valgrind), vs the floor"
	@echo "make install    create .venv and install the pinned dependencies"

install:
	scripts/bootstrap

demo:
	scripts/demo

test:
	scripts/test

test-sqlite: install
	.venv/bin/pytest -n 2 --dist loadgroup

lint:
	scripts/lint

format: install
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

typecheck: install
	DJANGO_SETTINGS_MODULE=backend.settings_test .venv/bin/mypy backend

bench: install
	@for f in bench/*.py; do case $$f in bench/http_presign.py|bench/http_cpu.py|bench/presign_instructions.py) continue;; esac; echo "==> $$f"; .venv/bin/python $$f || exit 1; done

bench-http: install
	.venv/bin/python bench/http_presign.py

bench-cpu: install
	.venv/bin/python bench/http_cpu.py

bench-instructions: install
	.venv/bin/python bench/presign_instructions.py

migrate: install
	.venv/bin/python manage.py migrate
