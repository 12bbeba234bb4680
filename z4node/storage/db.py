"""SQLite access off the reactor thread, with group commit.

One writer thread owns the only write connection. Writes are queued as
functions of a connection; the writer drains everything queued, runs each in
its own savepoint inside one transaction, commits once (one fsync of the WAL
for the whole batch, ``synchronous=FULL``) and only then fires each write's
Deferred. So a write is acknowledged only when it is on disk, and many small
concurrent writes cost one fsync between them instead of one each.

Reads run on a small bounded pool, each thread with its own connection (WAL
lets readers proceed beside the writer). A read issued after a write's
Deferred fired sees that write.

Threads other than the reactor's (the chunk I/O pool) may also read and
write with :meth:`read_blocking` and :meth:`write_blocking`, which wait for
the answer on the calling thread; the writer thread never waits for them,
so they cannot deadlock with it.
"""

import queue
from concurrent.futures import Future
import sqlite3
import threading

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool


class Database:
    """A SQLite file reached only through :meth:`read` and :meth:`write`."""

    # Readers: enough to overlap a few listings and version lookups; SQLite
    # reads are short, and more threads would only contend for 2 cores' GIL.
    read_threads = 4
    # Writes drained into one transaction at most; bounds the latency a
    # write can add to the batch it joins.
    max_batch = 256

    def __init__(self, reactor, path, schema):
        self._reactor = reactor
        self._path = path
        self._queue = queue.SimpleQueue()
        self._local = threading.local()
        self._connections = []
        self._connections_lock = threading.Lock()
        writer = self._connect()
        writer.executescript(schema)
        self._writer_connection = writer
        self._writer = threading.Thread(
            target=self._write_loop, name="z4-sqlite-writer", daemon=True)
        self._pool = ThreadPool(1, self.read_threads, name="z4-sqlite-read")
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
        self._pool.start()
        self._writer.start()

    def stop(self):
        """Finish queued writes, then close every connection (blocking)."""
        if not self._running:
            return
        self._running = False
        self._queue.put(None)
        self._writer.join()
        self._pool.stop()
        with self._connections_lock:
            for connection in self._connections:
                connection.close()
            self._connections = []

    def read(self, fn, *args):
        """Run ``fn(connection, *args)`` on a reader thread; a Deferred."""
        return deferToThreadPool(self._reactor, self._pool, self._read, fn, args)

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
        for d, outcome in outcomes:
            if isinstance(d, Future):
                if isinstance(outcome, Failure):
                    d.set_exception(outcome.value)
                else:
                    d.set_result(outcome)
            else:
                self._reactor.callFromThread(_fire, d, outcome)


def _fire(d, outcome):
    if isinstance(outcome, Failure):
        d.errback(outcome)
    else:
        d.callback(outcome)
