"""Clone a run into a form: ``/new/trace?clone=<id>``, ``/new/trial?clone=<id>``,
``/new/experiment?clone=<id>`` (the runs table's clone links give the run's job id; the run's own id
works too). The run's stored spec comes through the API and fills every field of the form."""

from __future__ import annotations

from typing import Optional

from frontend.api_client import ApiClient, ApiError


def stored_run(api: ApiClient, ident: str, resource: str) -> dict:
    """The run (``GET /traces/{id}`` or ``/experiments/{id}``, with its ``spec``) of the job ``ident``,
    or of the run ``ident`` itself; ``resource``: "trace" or "experiment". ApiError when neither is
    found, or when the job belongs to a run of the other kind."""
    read = api.trace if resource == "trace" else api.experiment
    job: Optional[dict] = None
    try:
        job = api.job(ident)
    except ApiError as exc:
        if exc.status != 404:
            raise
    if job is not None:
        found = job.get("resource") or {}
        if found.get("kind") != resource or not found.get("id"):
            raise ApiError(f"job {ident} is a {job.get('kind')} job, not a {resource}'s", 422)
        return read(found["id"])
    return read(ident)
