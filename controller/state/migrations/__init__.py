"""Alembic migrations of the case database (``streetsense db upgrade``)."""
