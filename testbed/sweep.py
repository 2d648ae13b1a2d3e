"""`python -m testbed.sweep`: remove namespaces and dirs of test runs whose owner process died."""

from testbed.netns import sweep_stale

if __name__ == "__main__":
    for ns in sweep_stale():
        print(f"removed stale namespace {ns}")
