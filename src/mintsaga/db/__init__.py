"""Postgres: the mint store, the runtime settings store and their schema migrations."""
