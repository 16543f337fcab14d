"""``python -m slayq.server``: claims runs from PostgreSQL and delivers them over HTTP."""
