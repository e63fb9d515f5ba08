"""The embedded broker: kombu's filesystem transport with an atomic publish and a reader that survives.

kombu's own ``_put`` creates the message file, then locks and writes it, while ``_get`` takes no lock:
a worker that lists the folder between the two claims an empty file, fails to decode it and the
message is gone (and the worker with it). Here a message is written whole to a hidden file in the
same folder (a name the reader never matches) and renamed into place with ``os.replace``, which is
atomic on one filesystem: a reader sees a complete message or none. Claiming stays kombu's: a
consumer moves the file out of the folder first (a rename, so exactly one consumer wins). A file that
still does not decode (written by something else) is set aside in ``<processed>/rejected`` with a
warning instead of killing the consumer.

The exchange tables (which queue a routing key goes to) had the same kind of race: the first binder
created the file with a truncating open before it took the lock, so a second process (the API and a
worker starting together) could read an empty table and die, or have its binding overwritten, after
which messages for that queue are routed nowhere. Here the table is opened without truncation,
read, changed and written back under one exclusive lock, and an empty table reads as empty.

Why this and not kombu's SQLAlchemy transport on the service's SQLite file: that transport polls
with a write transaction per poll, so several idle workers and the API would contend for SQLite's
single writer lock; the folder transport keeps the embedded mode's low latency and its files stay
inspectable. Celery selects it with ``broker_transport`` (``backend.broker.celery_config``).
"""

from __future__ import annotations

import logging
import os
import uuid
from time import monotonic

import fcntl

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

log = logging.getLogger("layertracer.broker")
TRANSPORT = "backend.embedded_broker:Transport"


def _read_table(handle) -> list:
    handle.seek(0)
    text = bytes_to_str(handle.read())
    return [filesystem.exchange_queue_t(*q) for q in loads(text)] if text.strip() else []


class Channel(filesystem.Channel):
    def get_table(self, exchange):
        """The bindings of ``exchange`` (read under a shared lock; a table being created reads empty)."""
        file = self._exchange_file(exchange)
        try:
            with open(file, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_SH)
                return _read_table(handle)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        """Add a binding: open without truncating, then read, change and write under one exclusive lock."""
        file = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        try:
            descriptor = os.open(file, os.O_RDWR | os.O_CREAT, 0o644)
            with os.fdopen(descriptor, "rb+", buffering=0) as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                bindings = _read_table(handle)
                if binding not in bindings:
                    bindings.insert(0, binding)
                    handle.seek(0)
                    handle.write(str_to_bytes(dumps(bindings)))
                    handle.truncate()
        except OSError as exc:
            raise ChannelError(f"Cannot open {file}") from exc

    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` on ``queue``: written to a hidden temporary file, then renamed into place."""
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: kombu's reader matches "<stamp>_<uuid>.<queue>.msg" by what follows the
        # first dot, which for ".<name>.part" is never "<queue>.msg".
        temporary = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(temporary, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, final)
        except OSError as exc:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue):
        """The next message of ``queue``; a file that does not decode is set aside, not fatal."""
        while True:
            try:
                return super()._get(queue)
            except ValueError as exc:  # json.JSONDecodeError: not a message this transport wrote
                log.warning("the embedded broker set aside a message of queue %r that does not decode (%s)", queue, exc)
                self._note_rejected(queue, exc)

    def _note_rejected(self, queue, exc) -> None:
        folder = os.path.join(self.processed_folder, "rejected")
        try:
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{uuid.uuid4()}.{queue}.txt"), "w", encoding="utf-8") as note:
                note.write(f"{exc}\n")
        except OSError:
            pass


class Transport(filesystem.Transport):
    Channel = Channel
    driver_type = "filesystem"
    driver_name = "filesystem"
