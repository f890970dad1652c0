"""Benchmarks of the bridge. ``python -m bench.ingest --help``; see bench/README.md."""
