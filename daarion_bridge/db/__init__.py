"""The Postgres side: one module per table group, raw SQL, small dataclasses."""
