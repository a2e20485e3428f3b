"""Kept so `python starter.py ...` (the runbook, alert texts, older scripts) still works.

The CLI is `mintsaga` (mintsaga.cli); the Python API is the `mintsaga` package.
"""

from mintsaga.cli.main import main

if __name__ == "__main__":
    main()
