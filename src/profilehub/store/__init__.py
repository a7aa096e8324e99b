"""Storage: tables (SQLAlchemy Core), the engine, migrations and the single writer."""
