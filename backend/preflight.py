"""``python -m backend.preflight [--migrate]``: check the service's settings before anything binds a port.

A problem (a placeholder secret in token mode, a public address without auth, ...) is printed as one
``error: ...`` line with exit code 2, which ``layertracer up`` and ``layertracer api`` show as it is.
``--migrate`` then brings the database to the latest schema (``up`` runs this before it starts the API
and the worker, so the two never race to create the same tables).
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from backend.settings import get_settings, settings_problem


def main(argv: list[str]) -> int:
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"error: {settings_problem(exc)}", file=sys.stderr)
        return 2
    if "--migrate" in argv:
        from backend.db.migrate import upgrade

        upgrade(settings.database_url)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
