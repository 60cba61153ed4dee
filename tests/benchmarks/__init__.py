"""Benchmarks of Dump U-Net on the full-size SD1.5 U-Net (not tests: run `python tests/benchmarks/bench.py`)."""
