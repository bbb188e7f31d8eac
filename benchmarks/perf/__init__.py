"""Performance benchmarks: each module has ``main()`` and prints ratios measured side by side in one run.

``python -m benchmarks.perf`` (``make bench``) runs them all; ``python -m benchmarks.perf NAME ...`` runs some.
"""
