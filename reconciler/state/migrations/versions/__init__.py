"""Alembic revision files of the state store (loaded by alembic, never imported by fleet)."""
