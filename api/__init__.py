"""gridcover service: FastAPI app, database, CLI."""

__version__ = "0.1.0"
