"""Database: typed SQLAlchemy 2 models (``models``), engines and sessions (``session``), migrations (``migrate``)."""
