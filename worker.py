"""Kept so `python worker.py` (deploy files, older scripts) still works: `mintsaga-worker`."""

from mintsaga.worker import main

if __name__ == "__main__":
    main()
