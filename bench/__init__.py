"""Benchmarks: each measures ours and a named peer in one run; see bench/run."""
