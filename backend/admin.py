"""Administration: ``python -m backend.admin create-token NAME | revoke-token NAME | migrate``.

Uses the database of ``LAYERTRACER_DATABASE_URL`` (or the data folder's SQLite file).
"""

from __future__ import annotations

import typer

from backend import security
from backend.db.migrate import upgrade
from backend.db.session import make_engine, session_scope
from backend.settings import get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LayerTracer service administration.")


def _engine():
    settings = get_settings()
    upgrade(settings.database_url)
    return make_engine(settings.database_url)


@app.command("create-token")
def create_token(
    name: str = typer.Argument(..., help="who or what the token is for"),
    admin: bool = typer.Option(False, "--admin", help="An admin token: may also register trust_remote_code models "
                               "(when the server's LAYERTRACER_ALLOW_REMOTE_CODE allows them)."),
) -> None:
    """Create an API token and print it once (only its sha256 is stored)."""
    engine = _engine()
    try:
        with session_scope(engine) as session:
            token = security.create_token(session, name, admin=admin)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
    typer.echo(token)


@app.command("revoke-token")
def revoke_token(name: str = typer.Argument(..., help="the token's name")) -> None:
    """Revoke an API token by name."""
    engine = _engine()
    try:
        with session_scope(engine) as session:
            found = security.revoke_token(session, name)
    finally:
        engine.dispose()
    if not found:
        typer.echo(f"error: no token named {name!r}", err=True)
        raise typer.Exit(2)
    typer.echo(f"revoked {name}")


@app.command("migrate")
def migrate() -> None:
    """Apply the database migrations (the API and the workers also do this at start)."""
    upgrade(get_settings().database_url)
    typer.echo("database is at the latest revision")


if __name__ == "__main__":
    app()
