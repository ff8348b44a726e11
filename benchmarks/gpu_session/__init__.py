"""One budgeted GPU session: what a lent GPU runs, in priority order, in about 6 minutes (`bash
benchmarks/gpu_session.sh`; `--tiny`: the CPU smoke run the tests do). See docs/benchmarks.md §The GPU session."""
