"""The admin REST API (FastAPI): one small router per resource, one role table."""
