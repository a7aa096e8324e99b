"""Benchmarks that print figures; never run by the test suite. ``python -m bench --help``."""
