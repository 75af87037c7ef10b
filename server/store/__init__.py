"""The database: typed models, the engine and sessions, the Alembic migrations."""
