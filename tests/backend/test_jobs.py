"""Job functions against real SQLite and Postgres: atomic claims, leases, cancel, retry, reaper."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from backend import jobs
from backend.db.models import Job
from backend.db.types import utcnow


def new_session(engine) -> Session:
    return Session(bind=engine, expire_on_commit=False)


def submit(engine, **kw) -> Job:
    with new_session(engine) as s:
        return jobs.submit_job(s, kind=kw.pop("kind", "trace"), spec=kw.pop("spec", {"x": 1}), **kw)


def test_submit_sets_queue_and_state(engine):
    job = submit(engine, kind="experiment", spec={"a": [1, 2]})
    with new_session(engine) as s:
        stored = jobs.get_job(s, job.id)
    assert (stored.status, stored.queue, stored.attempts, stored.spec) == ("queued", "train", 0, {"a": [1, 2]})
    assert jobs.queue_for("inspect") == "trace"
    with pytest.raises(jobs.JobError, match="unknown job kind"):
        jobs.queue_for("bake")


def test_idempotency_key_returns_the_same_job_under_concurrency(engine):
    ids: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def go(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            ids.append(submit(engine, spec={"i": i}, idempotency_key="key-1").id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(ids) == 8 and len(set(ids)) == 1
    with new_session(engine) as s:
        assert s.query(Job).count() == 1
    other = submit(engine, idempotency_key="key-2")
    assert other.id != ids[0]


def test_exactly_one_of_many_racing_workers_claims(engine):
    job = submit(engine)
    winners: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(10)

    def worker(name: str) -> None:
        try:
            with new_session(engine) as s:
                barrier.wait(timeout=10)
                if jobs.claim_job(s, job_id=job.id, worker_id=name, lease_seconds=60) is not None:
                    winners.append(name)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(winners) == 1
    with new_session(engine) as s:
        stored = jobs.get_job(s, job.id)
    assert (stored.status, stored.worker_id, stored.attempts) == ("running", winners[0], 1)
    assert stored.lease_expires_at > utcnow()


def test_many_jobs_many_workers_each_claimed_once(engine):
    ids = [submit(engine).id for _ in range(20)]
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        with new_session(engine) as s:
            for job_id in ids:
                if jobs.claim_job(s, job_id=job_id, worker_id=name, lease_seconds=60):
                    with lock:
                        claims.append((job_id, name))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(j for j, _ in claims) == sorted(ids)


def test_heartbeat_extends_lease_stores_progress_and_log(engine):
    job = submit(engine)
    with new_session(engine) as s:
        first_lease = jobs.claim_job(s, job_id=job.id, worker_id="w", lease_seconds=5).lease_expires_at
        progress = {"stage": "trace", "done": 3, "total": 10, "percent": 30.0, "eta_seconds": 7.0}
        assert jobs.heartbeat(s, job_id=job.id, worker_id="w", progress=progress, log="one\n", lease_seconds=120) is False
        assert jobs.heartbeat(s, job_id=job.id, worker_id="w", log="two\n", lease_seconds=120) is False
        stored = jobs.get_job(s, job.id)
    assert stored.progress == progress
    assert stored.log == "one\ntwo\n"
    assert stored.lease_expires_at > first_lease + timedelta(seconds=100)


def test_log_keeps_only_the_tail(engine):
    job = submit(engine)
    with new_session(engine) as s:
        jobs.claim_job(s, job_id=job.id, worker_id="w", lease_seconds=60)
        for i in range(10):
            jobs.heartbeat(s, job_id=job.id, worker_id="w", log=f"line{i}\n", log_limit=12)
        assert jobs.get_job(s, job.id).log == "line8\nline9\n"


def test_heartbeat_of_a_worker_that_lost_its_lease_says_stop(engine):
    job = submit(engine)
    with new_session(engine) as s:
        jobs.claim_job(s, job_id=job.id, worker_id="old", lease_seconds=0.01)
        later = utcnow() + timedelta(seconds=1)
        assert jobs.reap_expired(s, now=later) == [job.id]
        assert jobs.claim_job(s, job_id=job.id, worker_id="new", lease_seconds=60) is not None
        assert jobs.heartbeat(s, job_id=job.id, worker_id="old") is True
        assert jobs.lease_held(s, job_id=job.id, worker_id="old") is False
        assert jobs.finish_job(s, job_id=job.id, worker_id="old", status="succeeded") is False
        assert jobs.heartbeat(s, job_id=job.id, worker_id="new") is False
        assert jobs.finish_job(s, job_id=job.id, worker_id="new", status="succeeded") is True
        stored = jobs.get_job(s, job.id)
    assert (stored.status, stored.worker_id, stored.attempts) == ("succeeded", "new", 2)
    assert stored.finished_at is not None and stored.lease_expires_at is None


def test_cancel_queued_and_running(engine):
    queued = submit(engine)
    running = submit(engine)
    with new_session(engine) as s:
        assert jobs.request_cancel(s, job_id=queued.id).status == "cancelled"
        assert jobs.claim_job(s, job_id=queued.id, worker_id="w", lease_seconds=60) is None
        jobs.claim_job(s, job_id=running.id, worker_id="w", lease_seconds=60)
        assert jobs.heartbeat(s, job_id=running.id, worker_id="w") is False
        after = jobs.request_cancel(s, job_id=running.id)
        assert (after.status, after.cancel_requested) == ("running", True)
        assert jobs.heartbeat(s, job_id=running.id, worker_id="w") is True
        assert jobs.lease_held(s, job_id=running.id, worker_id="w") is True
        assert jobs.finish_job(s, job_id=running.id, worker_id="w", status="cancelled") is True
        assert jobs.get_job(s, running.id).status == "cancelled"
        assert jobs.request_cancel(s, job_id="nope") is None


def test_retry_only_failed_or_cancelled(engine):
    job = submit(engine)
    with new_session(engine) as s:
        assert jobs.retry_job(s, job_id=job.id) is None  # queued: nothing to retry
        jobs.claim_job(s, job_id=job.id, worker_id="w", lease_seconds=60)
        jobs.finish_job(s, job_id=job.id, worker_id="w", status="failed", error="boom")
        again = jobs.retry_job(s, job_id=job.id)
        assert (again.status, again.attempts, again.error, again.worker_id) == ("queued", 0, None, None)
        assert jobs.claim_job(s, job_id=job.id, worker_id="w2", lease_seconds=60).attempts == 1
        with pytest.raises(jobs.JobError):
            jobs.finish_job(s, job_id=job.id, worker_id="w2", status="running")


def test_reaper_requeues_then_fails_at_the_attempt_cap(engine):
    job = submit(engine, max_attempts=2)
    fresh = submit(engine)
    with new_session(engine) as s:
        jobs.claim_job(s, job_id=fresh.id, worker_id="alive", lease_seconds=600)
        for attempt in (1, 2):
            claimed = jobs.claim_job(s, job_id=job.id, worker_id=f"w{attempt}", lease_seconds=0.01)
            assert claimed is not None and claimed.attempts == attempt
            later = utcnow() + timedelta(seconds=1)
            reaped = jobs.reap_expired(s, now=later)
            if attempt == 1:
                assert reaped == [job.id]
                assert jobs.get_job(s, job.id).status == "queued"
            else:
                assert reaped == []
        stored = jobs.get_job(s, job.id)
        assert stored.status == "failed"
        assert "attempt 2 of 2" in stored.error
        assert jobs.claim_job(s, job_id=job.id, worker_id="w3", lease_seconds=60) is None
        assert jobs.get_job(s, fresh.id).status == "running"  # a live lease is left alone


def test_expired_lease_can_be_claimed_directly(engine):
    job = submit(engine)
    with new_session(engine) as s:
        jobs.claim_job(s, job_id=job.id, worker_id="dead", lease_seconds=-1)
        again = jobs.claim_job(s, job_id=job.id, worker_id="next", lease_seconds=60)
        assert again is not None and (again.worker_id, again.attempts) == ("next", 2)


def test_reaper_cancels_expired_jobs_with_a_cancel_request(engine):
    job = submit(engine)
    with new_session(engine) as s:
        jobs.claim_job(s, job_id=job.id, worker_id="w", lease_seconds=0.01)
        jobs.request_cancel(s, job_id=job.id)
        assert jobs.reap_expired(s, now=utcnow() + timedelta(seconds=1)) == []
        assert jobs.get_job(s, job.id).status == "cancelled"


def test_concurrent_reapers_requeue_each_job_once(engine):
    ids = [submit(engine).id for _ in range(10)]
    with new_session(engine) as s:
        for job_id in ids:
            jobs.claim_job(s, job_id=job_id, worker_id="dead", lease_seconds=0.01)
    later = utcnow() + timedelta(seconds=1)
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def reaper() -> None:
        with new_session(engine) as s:
            barrier.wait(timeout=10)
            results.append(jobs.reap_expired(s, now=later))

    threads = [threading.Thread(target=reaper) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    flat = [i for r in results for i in r]
    assert sorted(flat) == sorted(ids)


def test_stale_queued(engine):
    job = submit(engine)
    with new_session(engine) as s:
        assert jobs.stale_queued(s, older_than_seconds=60) == []
        assert jobs.stale_queued(s, older_than_seconds=60, now=utcnow() + timedelta(seconds=120)) == [job.id]


def test_a_running_job_that_missed_two_heartbeats_shows_as_stalled_until_requeued(client, db_url):
    """The API derives "stalled" from the last sign of life (updated_at) and its heartbeat period; the
    stored state stays "running" until the reaper re-queues the job."""
    from datetime import timedelta

    from sqlalchemy import update
    from sqlalchemy.orm import Session

    from backend.db.models import Job
    from backend.db.session import make_engine
    from backend.db.types import utcnow

    model = client.post("/api/v1/models", json={"source": "models/tiny"}).json()
    job_id = model["job"]["id"]
    engine = make_engine(db_url)
    with Session(engine) as s:
        assert jobs.claim_job(s, job_id=job_id, worker_id="w", lease_seconds=600) is not None
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "running"
    heartbeat = client.app.state.settings.heartbeat_seconds
    with Session(engine) as s:
        s.execute(update(Job).where(Job.id == job_id).values(updated_at=utcnow() - timedelta(seconds=2 * heartbeat + 1)))
        s.commit()
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "stalled"
    assert client.get(f"/api/v1/models/{model['id']}").json()["status"] == "stalled"
    with Session(engine) as s:
        assert s.get(Job, job_id).status == "running"  # stored state unchanged
        jobs.heartbeat(s, job_id=job_id, worker_id="w", lease_seconds=600)  # a late beat: alive again
    assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "running"
    engine.dispose()
