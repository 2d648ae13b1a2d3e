"""Real-component test bed: etcd, simulated hosts in namespaces, coordinator and agent processes.

Used by the tests, the benchmarks and `make demo`; everything it makes carries a per-run tag.
"""
