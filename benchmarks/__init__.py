"""threadstore benchmarks: ``make bench`` (never collected by pytest)."""
