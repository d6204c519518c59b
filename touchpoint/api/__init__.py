"""The HTTP API (FastAPI): events and accounts in, runs and tasks out."""
