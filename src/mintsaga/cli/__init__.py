"""The operators' command line, `mintsaga`: a thin layer over `mintsaga.api`."""
