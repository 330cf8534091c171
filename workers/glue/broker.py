"""The embedded broker: kombu's filesystem transport, made safe against half-written messages.

Why: kombu's filesystem transport (kombu 5.7, ``kombu/transport/filesystem.py``) writes a message by
opening ``<ms>_<uuid>.<queue>.msg`` under its *final* name and then writing the JSON into it (holding
an ``flock`` the reader never takes). The reader lists the queue folder, moves every file whose name
matches ``*.<queue>.msg`` away and parses it at once. A reader that looks between the writer's
``open`` and the end of its ``write`` therefore gets an empty or truncated file, ``loads`` raises
``JSONDecodeError`` out of ``drain_events``, and the Celery worker stops with "Unrecoverable error";
every later job then waits for a worker that is gone.

The fix, two halves:
- the writer writes each message to ``<name>.part`` in the queue folder (a name the reader's
  ``*.<queue>.msg`` test never matches) and renames it into place with ``os.replace``: a reader sees
  a whole message or nothing;
- the reader claims a file by renaming it (atomic, same file system) into the processed folder, so two
  consumers never both get one message; a claimed file that does not parse (a writer that is not this
  class, e.g. a stock kombu producer, still writing it) is put back and tried again on a later poll,
  and one still unparseable after ``CORRUPT_AFTER_S`` is moved to ``<processed>/rejected`` and logged
  instead of killing the worker.

The processed folder holds only messages being read at that moment: each is deleted right after it is
read (unless ``store_processed`` is set), so it does not grow in a long-running ``toroid serve``.
Registered for the embedded broker in workers/glue/app.py (``broker_transport``).
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from queue import Empty

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

PART_SUFFIX = ".part"  # a message being written: never matches the reader's "*.<queue>.msg"
CORRUPT_AFTER_S = 60.0  # a file still unparseable this long after its last write is not being written


class Channel(filesystem.Channel):
    """Filesystem channel whose messages appear atomically and whose reader never crashes on one."""

    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` onto ``queue``: write it under a ``.part`` name, then rename it into place."""
        name = "{}_{}.{}.msg".format(int(round(time.monotonic() * 1000)), uuid.uuid4(), queue)
        final = os.path.join(self.data_folder_out, name)
        part = final + PART_SUFFIX
        try:
            with open(part, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(part, final)  # atomic: the reader sees the whole message or none of it
        except OSError as exc:
            try:
                os.remove(part)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _claim_folder(self) -> str:
        # The processed folder lies beside the queue folder (same file system), so claiming is a rename.
        folder = self.processed_folder
        os.makedirs(folder, exist_ok=True)
        return folder

    def _get(self, queue):
        """Get the next whole message from ``queue``; raise Empty when there is none yet."""
        queue_find = f"{queue}.msg"
        claim_folder = self._claim_folder()
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != queue_find:
                continue  # another queue's message, or one still being written (.part)
            src = os.path.join(self.data_folder_in, name)
            claimed = os.path.join(claim_folder, name)
            try:
                os.rename(src, claimed)  # atomic claim: of several consumers exactly one wins
            except OSError:
                continue  # taken by another consumer meanwhile
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
                message = loads(bytes_to_str(payload))
            except (OSError, ValueError) as exc:
                self._unreadable(src, claimed, exc)
                continue
            if not self.store_processed:
                try:
                    os.remove(claimed)
                except OSError:
                    pass
            return message
        raise Empty()

    def _unreadable(self, src: str, claimed: str, exc: Exception) -> None:
        """A claimed file that does not parse: put it back to retry later, or reject it when it is old."""
        try:
            age = time.time() - os.stat(claimed).st_mtime
        except OSError:
            return  # gone: nothing to retry
        if age < CORRUPT_AFTER_S:
            try:
                os.replace(claimed, src)  # its writer may still be writing: try again on a later poll
            except OSError:
                pass
            return
        rejected = os.path.join(os.path.dirname(claimed), "rejected")
        os.makedirs(rejected, exist_ok=True)
        try:
            os.replace(claimed, os.path.join(rejected, os.path.basename(claimed)))
        except OSError:
            pass
        logger.error("broker: message file %s unreadable for %.0f s (%s); moved to %s",
                     os.path.basename(claimed), age, exc, rejected)


class Transport(filesystem.Transport):
    """kombu's filesystem transport with :class:`Channel` (atomic writes, a reader that never crashes)."""

    Channel = Channel
