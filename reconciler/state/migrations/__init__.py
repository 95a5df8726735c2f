"""Alembic migrations of the state store; `reconciler.state.migrate` runs them to head in code.

Each revision must run on SQLite (use `op.batch_alter_table` for anything beyond adding a
table, column or index) and on PostgreSQL, and must never import the live schema module:
a revision is frozen history, written out in full. To add one, change `schema.py`, then run
`alembic.command.revision(reconciler.state.migrate.alembic_config(URL), autogenerate=True,
message=...)` against a database at head and review what it wrote.
"""
