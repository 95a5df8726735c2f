"""Fleet-repo generator and benchmarks; run by hand, not part of the test suite."""
