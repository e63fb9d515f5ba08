"""200 concurrent submissions (threads posting to the API; some share an Idempotency-Key): every one
is recorded and completed exactly once, none lost or duplicated, in both modes."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import func, select

from backend.db.models import Job, Trace
from backend.db.session import make_engine, session_scope
from harness import wait_for

pytestmark = pytest.mark.slow

SUBMISSIONS = 200
SHARED_KEYS = 25  # the first 100 submissions use 25 keys, 4 concurrent posts each; the rest are unique


def test_200_concurrent_submissions(service, model_root):
    model = service.register_model(model_root / "tiny")
    run = uuid.uuid4().hex[:8]
    keys = [f"{run}-shared-{i % SHARED_KEYS}" if i < 100 else f"{run}-own-{i}" for i in range(SUBMISSIONS)]
    body = {"model_id": model["id"], "task_sets": ["antonyms_en"], "perturbations": ["skip"],
            "options": {"limit": 1, "similarity": False, "position_view": False}}

    with httpx.Client(base_url=service.client.base_url, timeout=60,
                      limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)) as client:
        def submit(key: str) -> tuple[str, int, str]:
            for _ in range(20):
                response = client.post("/traces", json=body, headers={"Idempotency-Key": key})
                if response.status_code != 409:  # 409: the same key is being created right now; try again
                    break
            assert response.status_code in (200, 201), response.text
            return key, response.status_code, response.json()["id"]

        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(submit, keys))

    ids_by_key: dict[str, set[str]] = defaultdict(set)
    for key, _, trace_id in answers:
        ids_by_key[key].add(trace_id)
    distinct = len(set(keys))
    assert distinct == 125 and all(len(ids) == 1 for ids in ids_by_key.values())  # one trace per key
    assert len({trace_id for _, _, trace_id in answers}) == distinct
    assert Counter(status for _, status, _ in answers)[201] == distinct  # each key created once

    engine = make_engine(service.database_url)
    trace_ids = {trace_id for _, _, trace_id in answers}
    # Every job of this test, found by its trace (the API stores idempotency keys hashed).
    mine = Job.resource_kind == "trace", Job.resource_id.in_(trace_ids)

    def statuses() -> Counter:
        with session_scope(engine) as session:
            return Counter(dict(session.execute(select(Job.status, func.count()).where(*mine).group_by(Job.status)).all()))

    def finished():
        counts = statuses()
        done = counts.total() == distinct and set(counts) <= {"succeeded", "failed", "cancelled"}
        return counts if done else None

    try:
        final = wait_for(finished, 150, "all submitted jobs to finish", interval=0.5)
        assert final == Counter({"succeeded": distinct})
        with session_scope(engine) as session:
            jobs = session.execute(select(Job).where(*mine)).scalars().all()
            assert len(jobs) == distinct and {j.attempts for j in jobs} == {1}  # none ran twice
            assert {j.resource_id for j in jobs} == trace_ids
            stored = session.execute(
                select(func.count()).select_from(Trace).where(Trace.id.in_(trace_ids), Trace.summary.is_not(None))
            ).scalar_one()
            assert stored == distinct
    finally:
        engine.dispose()
