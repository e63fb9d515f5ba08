"""``python -m worker.migrate``: check the settings and bring the configured database to the latest
schema (the same as ``python -m backend.preflight --migrate``)."""

import sys

from backend.preflight import main

if __name__ == "__main__":
    sys.exit(main(["--migrate"]))
