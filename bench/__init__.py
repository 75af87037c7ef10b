"""Benchmarks of visio-permanence against the real server, each with a baseline in the same run.

Entry point: ``python -m bench.run`` (``make bench``). See BENCHMARKS.md for the method and figures.
"""
