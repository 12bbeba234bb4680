"""SQLite access off the reactor thread, with group commit.

One writer thread owns the only write connection. Writes are queued as
functions of a connection; the writer drains everything queued, runs each in
its own savepoint inside one transaction, commits once (one fsync of the WAL
for the whole batch, ``synchronous=FULL``) and only then fires each write's
Deferred. So a write is acknowledged only when it is on disk, and many small
concurrent writes cost one fsync between them instead of one each.

Reads run on a few reader threads, each with its own connection (WAL lets
readers proceed beside the writer); a reader that wakes takes every read
queued meanwhile. Answers of both go back to the reactor in batches, through
:class:`_Answers`, which wakes it once for many. A read issued after a
write's Deferred fired sees that write.

Threads other than the reactor's (the chunk I/O pool) may also read and
write with :meth:`read_blocking` and :meth:`write_blocking`, which wait for
the answer on the calling thread; the writer thread never waits for them,
so they cannot deadlock with it.
"""

import queue
from concurrent.futures import Future
import sqlite3
import threading
import time

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


class Database:
    """A SQLite file reached only through :meth:`read` and :meth:`write`."""

    # Readers: enough to overlap a few listings and version lookups; SQLite
    # reads are short, and more threads would only contend for 2 cores' GIL.
    read_threads = 4
    # How long a reader may sit on answers while it works through a batch.
    read_flush_seconds = 0.001
    # Writes drained into one transaction at most; bounds the latency a
    # write can add to the batch it joins.
    max_batch = 256

    def __init__(self, reactor, path, schema, upgrade=None):
        self._reactor = reactor
        self._path = path
        self._queue = queue.SimpleQueue()
        self._reads = queue.SimpleQueue()
        self._answers = _Answers(reactor)
        self._local = threading.local()
        self._connections = []
        self._connections_lock = threading.Lock()
        writer = self._connect()
        writer.executescript(schema)
        if upgrade is not None:
            upgrade(writer)
        self._writer_connection = writer
        self._writer = threading.Thread(
            target=self._write_loop, name="z4-sqlite-writer", daemon=True)
        self._readers = [
            threading.Thread(target=self._read_loop, name=f"z4-sqlite-read-{i}", daemon=True)
            for i in range(self.read_threads)]
        self._running = False

    def _connect(self):
        connection = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit fsyncs the WAL, so an acknowledged write
        # survives power loss, not only a process crash.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute("PRAGMA busy_timeout=10000")
        with self._connections_lock:
            self._connections.append(connection)
        return connection

    def start(self):
        self._running = True
        self._writer.start()
        for reader in self._readers:
            reader.start()

    def stop(self):
        """Finish queued writes, then close every connection (blocking)."""
        if not self._running:
            return
        self._running = False
        self._queue.put(None)
        self._writer.join()
        for reader in self._readers:
            self._reads.put(None)
        for reader in self._readers:
            reader.join()
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections = []

    def read(self, fn, *args):
        """Run ``fn(connection, *args)`` on a reader thread; a Deferred."""
        d = Deferred()
        self._reads.put((fn, args, d))
        return d

    def _read_loop(self):
        # A reader that wakes takes every read queued meanwhile and answers
        # them together: one wake-up of the reactor for many reads. The
        # answers so far go out before the next read once a batch has run
        # for read_flush_seconds, so a long read (a listing page) holds up
        # the quick ones before it by at most its own duration.
        while True:
            item = self._reads.get()
            outcomes = []
            flush_at = time.monotonic() + self.read_flush_seconds
            while item is not None:
                fn, args, d = item
                try:
                    outcomes.append((d, self._read(fn, args)))
                except BaseException:
                    outcomes.append((d, Failure()))
                try:
                    item = self._reads.get_nowait()
                except queue.Empty:
                    break
                if time.monotonic() >= flush_at:
                    self._answers.put_all(outcomes)
                    outcomes = []
                    flush_at = time.monotonic() + self.read_flush_seconds
            if outcomes:
                self._answers.put_all(outcomes)
            if item is None:
                return

    def _read(self, fn, args):
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        return fn(connection, *args)

    def write(self, fn, *args):
        """Queue ``fn(connection, *args)`` for the writer; fires after commit."""
        d = Deferred()
        self._queue.put((fn, args, d))
        return d

    def read_blocking(self, fn, *args):
        """Run ``fn(connection, *args)`` now, on this (non-reactor) thread."""
        return self._read(fn, args)

    def write_future(self, fn, *args):
        """Queue a write from any thread; a ``concurrent.futures.Future``
        that completes (on the writer thread) when it is committed."""
        future = Future()
        self._queue.put((fn, args, future))
        return future

    def write_blocking(self, fn, *args):
        """Queue a write and wait on this (non-reactor) thread until it is
        committed; its result, or its exception raised here."""
        return self.write_future(fn, *args).result()

    def _write_loop(self):
        connection = self._writer_connection
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._run_batch(connection, batch)
            if stop:
                return

    def _run_batch(self, connection, batch):
        outcomes = []
        try:
            connection.execute("BEGIN IMMEDIATE")
            for fn, args, d in batch:
                connection.execute("SAVEPOINT w")
                try:
                    result = fn(connection, *args)
                except BaseException:
                    connection.execute("ROLLBACK TO w")
                    connection.execute("RELEASE w")
                    outcomes.append((d, Failure()))
                else:
                    connection.execute("RELEASE w")
                    outcomes.append((d, result))
            connection.execute("COMMIT")
        except BaseException:
            # The commit itself failed (disk full, I/O error): nothing of the
            # batch is durable, so every write in it fails.
            failure = Failure()
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            outcomes = [(d, failure) for _, _, d in batch]
        deferreds = []
        for d, outcome in outcomes:
            if isinstance(d, Future):
                if isinstance(outcome, Failure):
                    d.set_exception(outcome.value)
                else:
                    d.set_result(outcome)
            else:
                deferreds.append((d, outcome))
        if deferreds:
            self._answers.put_all(deferreds)


class _Answers:
    """Outcomes of reads and writes on their way to the reactor thread.

    The reactor is woken once for all the batches that arrive while a
    hand-over is pending: under load one wake-up fires many Deferreds.
    Twisted's thread pool cost a wake-up of a pool thread and of the
    reactor per read, plus its context plumbing; with a 4 KiB GET at
    concurrency 32 that was a fifth of the reactor thread's time.
    """

    def __init__(self, reactor):
        self._reactor = reactor
        self._lock = threading.Lock()
        self._pending = []

    def put_all(self, outcomes):
        """Hand ``[(deferred, result or Failure), ...]`` to the reactor."""
        with self._lock:
            self._pending.extend(outcomes)
            wake = len(self._pending) == len(outcomes)
        if wake:
            self._reactor.callFromThread(self._deliver)

    def _deliver(self):
        with self._lock:
            pending, self._pending = self._pending, []
        for d, outcome in pending:
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)
