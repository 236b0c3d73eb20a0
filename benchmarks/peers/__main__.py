"""``python -m benchmarks.peers`` (``make bench-peers``): see :mod:`benchmarks.peers.runner`."""

from .runner import main

raise SystemExit(main())
