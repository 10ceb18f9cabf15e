"""One queue for every timed run in this process: timings never share the cores silently.

A Streamlit server runs each browser session's script in its own thread. Two sessions
timing at once would each measure the other; a sweep run on the script thread would block
that session's stepping for its whole length. So every timed run is a ``Job`` handed to
``QUEUE``: one worker thread runs the jobs one after the other, in the order submitted,
off every script thread. A session polls its job (state, progress, partial results) and,
while others' jobs are ahead of it, can say so (``Job.ahead``).

A job's ``work(job)`` runs on the worker thread: it appends partial results to ``job.items``
and reports ``job.progress``; it calls ``job.check()`` between measurements, which raises
``Cancelled`` once the job was cancelled. Nothing here imports Streamlit.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable


class Cancelled(Exception):
    """Raised by ``Job.check`` in a cancelled job's work."""


class Job:
    """One timed run: queued -> running -> done | cancelled | failed."""

    _ids = itertools.count(1)

    def __init__(self, label: str, owner: str, work: Callable[[Job], Any]):
        self.id = next(self._ids)
        self.label = label  # what it times, for other sessions' "waiting for ..." notice
        self.owner = owner  # the session that submitted it
        self.work = work
        self.state = "queued"
        self.progress = ""
        self.fraction = 0.0  # 0..1, as the work reports it
        self.items: list = []  # partial results, appended by the work as they arrive
        self.meta: dict = {}  # what the work measured besides them (e.g. the roofs)
        self.result: Any = None
        self.error: str | None = None
        self.trace = ""  # the traceback of a failed run (for the log, not the page)
        self.submitted = time.monotonic()
        self.started: float | None = None
        self.finished: float | None = None
        self._cancel = threading.Event()
        self._queue: RunQueue | None = None

    @property
    def pending(self) -> bool:
        return self.state in ("queued", "running")

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Call between measurements: raises ``Cancelled`` once the job was cancelled."""
        if self._cancel.is_set():
            raise Cancelled()

    def report(self, progress: str, fraction: float | None = None) -> None:
        self.progress = progress
        if fraction is not None:
            self.fraction = min(1.0, max(0.0, fraction))

    def ahead(self) -> list[Job]:
        """The jobs that run before this one (the running job first); empty once it runs."""
        return self._queue.ahead(self) if self._queue and self.state == "queued" else []


class RunQueue:
    """Jobs run one at a time, first in first out, on one worker thread (started lazily)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()
        self.running: Job | None = None
        self._thread: threading.Thread | None = None

    def submit(self, label: str, owner: str, work: Callable[[Job], Any]) -> Job:
        job = Job(label, owner, work)
        job._queue = self
        with self._cv:
            self._waiting.append(job)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="attnviz-timing",
                                                daemon=True)
                self._thread.start()
            self._cv.notify()
        return job

    def ahead(self, job: Job) -> list[Job]:
        with self._cv:
            before = list(itertools.takewhile(lambda j: j is not job, self._waiting))
            running = [self.running] if self.running is not None else []
            return running + [j for j in before if not j.cancelled]

    def _next(self) -> Job:
        with self._cv:
            while not self._waiting:
                self._cv.wait()
            job = self._waiting.popleft()
            self.running = job
            return job

    def _loop(self) -> None:
        while True:
            job = self._next()
            job.started = time.monotonic()
            try:
                if job.cancelled:
                    raise Cancelled()
                job.state = "running"
                job.result = job.work(job)
                job.state = "done"
            except Cancelled:
                job.state = "cancelled"
            except Exception as e:  # a failed run is reported on its page, not fatal
                job.error = f"{type(e).__name__}: {e}"
                job.trace = traceback.format_exc()
                job.state = "failed"
                logging.getLogger(__name__).error("timing run %r failed:\n%s", job.label,
                                                  job.trace)
            finally:
                job.finished = time.monotonic()
                with self._cv:
                    self.running = None


QUEUE = RunQueue()  # the process's one queue: every session's timed runs go through it
