"""The benchmark: ``python -m bench`` (full) or ``python -m bench --quick`` (smoke).

See ``bench/README.md`` for the scenarios, the targets and how to read the results.
"""
