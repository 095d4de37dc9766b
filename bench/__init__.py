"""Benchmarks: `make bench` runs each module's `run()` and prints one table."""
