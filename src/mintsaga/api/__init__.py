"""The Python API for a backend and for operators' scripts: start and steer mints, read their
timeline, flip the runtime switches, run the health check.

Import from the package (`mintsaga.start_mint`) rather than from these modules: the package's
`__all__` is the public surface.
"""
