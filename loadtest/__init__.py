"""Load tests and the benchmark runner of livefeat (see loadtest/README.md)."""
