"""Benchmarks of warptasks against warpdrive and the usual alternatives (run by ``inv bench``)."""
