"""The embedded broker under concurrent publish and consume by several processes: none lost, none
duplicated; a file that is not a message does not kill a consumer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from backend.broker import broker_transport_options, celery_config
from backend.embedded_broker import TRANSPORT
from backend.settings import Settings

REPO = Path(__file__).resolve().parents[2]
PUBLISHERS, CONSUMERS, PER_PUBLISHER = 3, 3, 1000

PROGRAM = r'''
import json, sys, os
from pathlib import Path
from kombu import Connection
role, options_json, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
options = json.loads(options_json)
with Connection("filesystem://", transport=options.pop("transport"), transport_options=options) as conn:
    queue = conn.SimpleQueue("stress")
    if role.startswith("publish"):
        for i in range(int(sys.argv[4])):
            queue.put({"id": f"{role}-{i}"})
        out.write_text("done")
    else:
        stop = Path(sys.argv[4])
        with out.open("a") as got:
            while True:
                try:
                    message = queue.get(timeout=0.2)
                except queue.Empty:
                    if stop.exists():
                        break
                    continue
                got.write(message.payload["id"] + "\n")
                got.flush()
                message.ack()
'''


def _options(tmp_path: Path) -> dict:
    settings = Settings(data_dir=tmp_path / "data")
    options = broker_transport_options(settings)
    options.update(polling_interval=0.01, transport=celery_config(settings)["broker_transport"])
    return options


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_thousands_of_messages_from_several_processes_none_lost_none_duplicated(tmp_path):
    options = _options(tmp_path)
    assert options["transport"] == TRANSPORT
    script = tmp_path / "broker_stress.py"
    script.write_text(PROGRAM)
    stop = tmp_path / "stop"
    run = lambda *args: subprocess.Popen([sys.executable, str(script), *args], cwd=REPO)  # noqa: E731
    consumers = [run(f"consume{c}", json.dumps(options), str(tmp_path / f"got{c}.txt"), str(stop)) for c in range(CONSUMERS)]
    publishers = [run(f"publish{p}", json.dumps(options), str(tmp_path / f"sent{p}.txt"), str(PER_PUBLISHER))
                  for p in range(PUBLISHERS)]
    try:
        for process in publishers:
            assert process.wait(timeout=300) == 0
        expected = {f"publish{p}-{i}" for p in range(PUBLISHERS) for i in range(PER_PUBLISHER)}

        def received() -> list[str]:
            return [line for c in range(CONSUMERS) if (tmp_path / f"got{c}.txt").exists()
                    for line in (tmp_path / f"got{c}.txt").read_text().split()]

        def all_consumed() -> bool:
            dead = [c for c, process in enumerate(consumers) if process.poll() is not None]
            assert not dead, f"consumer {dead} died (kombu's own filesystem transport dies here on a half-written message)"
            return len(received()) >= len(expected)

        _wait(all_consumed, 300, "every message to be consumed")
        stop.write_text("stop")
        for process in consumers:
            assert process.wait(timeout=60) == 0  # no consumer died on a half-written message
    finally:
        for process in publishers + consumers:
            if process.poll() is None:
                process.kill()
    got = received()
    assert len(got) == len(set(got))  # none twice
    assert set(got) == expected  # none lost
    assert sum(1 for c in range(CONSUMERS) if (tmp_path / f"got{c}.txt").read_text()) >= 2  # shared out
    leftovers = [p.name for p in Path(options["data_folder_in"]).iterdir()]
    assert leftovers == []  # no message and no temporary file left behind


def test_a_file_that_is_no_message_is_set_aside_and_the_next_one_delivered(tmp_path):
    from kombu import Connection

    options = _options(tmp_path)
    transport = options.pop("transport")
    with Connection("filesystem://", transport=transport, transport_options=options) as conn:
        queue = conn.SimpleQueue("jobs")
        # What kombu's own publish could leave for a reader to find: an empty message file, first in order.
        (Path(options["data_folder_in"]) / "0_empty.jobs.msg").write_bytes(b"")
        queue.put({"id": "after"})
        message = queue.get(timeout=5)
        assert message.payload == {"id": "after"}
        message.ack()
    rejected = list((Path(options["processed_folder"]) / "rejected").iterdir())
    assert len(rejected) == 1 and rejected[0].name.endswith(".jobs.txt")


BINDER = r'''
import json, sys
from kombu import Connection, Exchange, Queue
options = json.loads(sys.argv[1])
with Connection("filesystem://", transport=options.pop("transport"), transport_options=options) as conn:
    channel = conn.default_channel
    for i in range(20):
        Queue(f"{sys.argv[2]}-{i}", Exchange("jobs", type="direct"), routing_key=f"{sys.argv[2]}-{i}")(channel).declare()
'''


def test_bindings_declared_at_once_by_several_processes_are_all_kept(tmp_path):
    """The API and workers starting together declare their queues on one exchange table: none may
    overwrite another's binding (a lost binding routes that queue's messages nowhere)."""
    from kombu import Connection

    options = _options(tmp_path)
    script = tmp_path / "binder.py"
    script.write_text(BINDER)
    binders = [subprocess.Popen([sys.executable, str(script), json.dumps(options), f"p{n}"], cwd=REPO) for n in range(6)]
    assert [process.wait(timeout=120) for process in binders] == [0] * 6
    transport = options.pop("transport")
    with Connection("filesystem://", transport=transport, transport_options=options) as conn:
        table = conn.default_channel.get_table("jobs")
    assert sorted(q.queue for q in table) == sorted(f"p{n}-{i}" for n in range(6) for i in range(20))
