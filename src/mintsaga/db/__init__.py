"""Postgres: the mint store, the runtime settings store, the executor they share and the schema
migrations."""
