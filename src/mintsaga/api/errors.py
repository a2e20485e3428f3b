"""`StarterError`: a request the API refuses, or a mint it cannot steer; the message says why."""

from __future__ import annotations


class StarterError(RuntimeError):
    """A request the starter refuses, or a mint it cannot steer; the message says why."""
