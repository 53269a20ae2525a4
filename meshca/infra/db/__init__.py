"""SQLAlchemy storage: SQLite embedded by default, PostgreSQL for several replicas."""
