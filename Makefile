# The two commands (see README): `make demo` runs the main job, `make test`
# runs the whole suite. Both set up what is missing first.
.PHONY: setup demo test test-unit bench clean-test-leftovers

setup:
	@scripts/setup.sh

demo: setup
	@scripts/demo.sh

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)
	.venv/bin/lint-imports

# The fast loop: pure and unit tests only (no Docker, no servers), seconds.
test-unit:
	.venv/bin/python -m pytest tests/unit -q
	.venv/bin/lint-imports

bench: setup
	.venv/bin/python -m benchmarks $(BENCH_ARGS)

clean-test-leftovers:
	-docker ps -aq --filter label=genesis.test-run | xargs -r docker rm -f
	-docker images -q --filter label=genesis.test-run | xargs -r docker rmi -f
