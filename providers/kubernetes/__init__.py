"""Kubernetes: a test API server that real kubectl accepts, for tests, benchmarks and the lab."""
