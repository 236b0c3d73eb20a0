"""threadstore benchmarks: ``make bench`` (never collected by pytest).

``python -m benchmarks`` runs the scenarios S1-S9 (see ``benchmarks/__main__.py``), prints a
markdown table of every figure with its target, and writes ``benchmarks/results/``. Speed is
also reported as ratios against baselines run in the same process, because the machines
these numbers come from are shared and noisy. Nothing here asserts a timing.
"""
