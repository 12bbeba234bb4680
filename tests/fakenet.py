"""A fake UDP network and fake clocks, for running many nodes in one process.

Owns: :class:`HeapClock` (an ``IReactorTime`` whose ``callLater`` is
O(log n), where ``twisted.internet.task.Clock`` re-sorts every call — too
slow for 500 nodes), :class:`NodeClock` (one node's view of a shared clock,
which can be paused like a SIGSTOPped process), and :class:`FakeNetwork`
(address -> protocol, delivery through the clock with latency, jitter, loss,
one-way and two-way partitions, stalled and killed nodes).

Used by the unit tests and by ``benchmarks/swim_sim.py``. Nothing in it
touches a socket or the real reactor.
"""

import heapq

from twisted.internet.error import AlreadyCalled, AlreadyCancelled


class _HeapCall:
    """An ``IDelayedCall`` scheduled on a :class:`HeapClock`."""

    def __init__(self, clock, time, func, args, kw):
        self._clock = clock
        self.time = time
        self.func, self.args, self.kw = func, args, kw
        self.cancelled = self.called = False
        self.version = 0

    def getTime(self):
        return self.time

    def active(self):
        return not (self.cancelled or self.called)

    def cancel(self):
        if self.cancelled:
            raise AlreadyCancelled()
        if self.called:
            raise AlreadyCalled()
        self.cancelled = True

    def reset(self, seconds_from_now):
        if not self.active():
            raise AlreadyCalled() if self.called else AlreadyCancelled()
        self.time = self._clock.now + seconds_from_now
        self.version += 1
        self._clock._push(self)

    def delay(self, seconds_later):
        self.reset(self.time + seconds_later - self._clock.now)


class HeapClock:
    """A fake ``IReactorTime`` backed by a heap; time moves only by advance()."""

    def __init__(self, start=0.0):
        self.now = start
        self._heap = []
        self._seq = 0

    def seconds(self):
        return self.now

    def callLater(self, delay, func, *args, **kw):
        call = _HeapCall(self, self.now + max(0.0, delay), func, args, kw)
        self._push(call)
        return call

    def _push(self, call):
        self._seq += 1
        heapq.heappush(self._heap, (call.time, self._seq, call.version, call))

    def getDelayedCalls(self):
        return [c for _, _, v, c in self._heap if c.active() and v == c.version]

    def advance(self, amount):
        self.run_until(self.now + amount)

    def run_until(self, when):
        """Run every call due up to ``when``, in time order, then set now."""
        heap = self._heap
        while heap and heap[0][0] <= when:
            time, _, version, call = heapq.heappop(heap)
            if version != call.version or not call.active():
                continue
            self.now = max(self.now, time)
            call.called = True
            call.func(*call.args, **call.kw)
        self.now = max(self.now, when)


class _NodeCall:
    """A call on a :class:`NodeClock`: held back while the node is paused."""

    def __init__(self, node_clock, func, args, kw):
        self._node_clock = node_clock
        self.func, self.args, self.kw = func, args, kw
        self.inner = None
        self.cancelled = self.called = False
        # Bumped by reset(): a firing already sitting in a paused node's
        # backlog belongs to an older generation and must not run.
        self.generation = 0

    def _schedule(self, delay):
        generation = self.generation
        self.inner = self._node_clock._base.callLater(delay, self._fire, generation)

    def _fire(self, generation):
        self._node_clock._run_or_hold(self.inner.getTime(), lambda: self._run(generation))

    def _run(self, generation):
        if self.cancelled or generation != self.generation:
            return
        self.called = True
        self.func(*self.args, **self.kw)

    def getTime(self):
        return self.inner.getTime()

    def active(self):
        return not (self.cancelled or self.called)

    def cancel(self):
        if self.cancelled:
            raise AlreadyCancelled()
        if self.called:
            raise AlreadyCalled()
        self.cancelled = True
        if self.inner.active():
            self.inner.cancel()

    def reset(self, seconds_from_now):
        if not self.active():
            raise AlreadyCalled() if self.called else AlreadyCancelled()
        if self.inner.active():
            self.inner.cancel()
        self.generation += 1
        self._schedule(seconds_from_now)

    def delay(self, seconds_later):
        self.reset(self.inner.getTime() + seconds_later - self._node_clock.seconds())


class NodeClock:
    """One node's clock: the shared clock's time, with pausing.

    While paused (the process is SIGSTOPped, or stalls in a long GC) nothing
    the node scheduled runs and nothing it receives is processed; both are
    held in a backlog and run in due order when it resumes, as a process
    that wakes up finds expired timers and a full socket buffer.
    """

    def __init__(self, base):
        self._base = base
        self.paused = False
        self.killed = False
        self._backlog = []
        self._seq = 0

    def seconds(self):
        return self._base.seconds()

    def callLater(self, delay, func, *args, **kw):
        call = _NodeCall(self, func, args, kw)
        call._schedule(delay)
        return call

    def _run_or_hold(self, due, run):
        if self.killed:
            return
        if self.paused:
            self._seq += 1
            self._backlog.append((due, self._seq, run))
            return
        run()

    def pause(self):
        self.paused = True

    def resume(self):
        self.paused = False
        backlog, self._backlog = sorted(self._backlog), []
        for _, _, run in backlog:
            if self.paused or self.killed:
                break
            run()

    def kill(self):
        self.killed = True
        self._backlog = []


class FakeUDPTransport:
    """What a ``DatagramProtocol`` sees as its transport on a FakeNetwork."""

    def __init__(self, network, address):
        self._network = network
        self.address = address

    def write(self, data, addr):
        self._network.send(self.address, tuple(addr), data)

    def getHost(self):
        return self.address

    def stopListening(self):
        self._network.unlisten(self.address)


class FakeNetwork:
    """Datagrams between addresses, delivered through a clock.

    ``latency`` seconds one way plus up to ``jitter`` more, uniformly; each
    datagram is lost with probability ``loss``. :meth:`block` cuts one
    direction, :meth:`partition` both; :meth:`heal` undoes every cut.
    """

    def __init__(self, clock, rng, latency=0.002, jitter=0.0, loss=0.0):
        self.clock = clock
        self.rng = rng
        self.latency = latency
        self.jitter = jitter
        self.loss = loss
        self._endpoints = {}
        self._node_clocks = {}
        self._blocked = set()
        self.sent = self.delivered = self.lost = self.cut = 0
        self.bytes_sent = 0
        self.largest = 0

    def node_clock(self, address):
        """The clock a node at ``address`` must use (pausable)."""
        address = tuple(address)
        if address not in self._node_clocks or self._node_clocks[address].killed:
            self._node_clocks[address] = NodeClock(self.clock)
        return self._node_clocks[address]

    def listen(self, address, protocol):
        """Attach ``protocol`` at ``address`` and start it, like listenUDP."""
        address = tuple(address)
        transport = FakeUDPTransport(self, address)
        self._endpoints[address] = protocol
        protocol.makeConnection(transport)
        return transport

    def unlisten(self, address):
        protocol = self._endpoints.pop(tuple(address), None)
        if protocol is not None:
            protocol.doStop()

    def send(self, src, dst, data):
        self.sent += 1
        self.bytes_sent += len(data)
        self.largest = max(self.largest, len(data))
        if (src, dst) in self._blocked:
            self.cut += 1
            return
        if self.loss and self.rng.random() < self.loss:
            self.lost += 1
            return
        delay = self.latency + (self.rng.random() * self.jitter if self.jitter else 0.0)
        self.clock.callLater(delay, self._arrive, src, dst, data)

    def _arrive(self, src, dst, data):
        protocol = self._endpoints.get(dst)
        if protocol is None:
            return
        node_clock = self._node_clocks.get(dst)
        if node_clock is None:
            self._deliver(protocol, dst, src, data)
        else:
            node_clock._run_or_hold(
                self.clock.seconds(), lambda: self._deliver(protocol, dst, src, data)
            )

    def _deliver(self, protocol, dst, src, data):
        # The node may have been unplugged while the packet sat in its backlog.
        if self._endpoints.get(dst) is protocol:
            self.delivered += 1
            protocol.datagramReceived(data, src)

    def block(self, src, dst):
        """Drop everything ``src`` sends to ``dst`` (one-way partition)."""
        self._blocked.add((tuple(src), tuple(dst)))

    def partition(self, side_a, side_b):
        """Drop everything between the two groups of addresses, both ways."""
        for a in side_a:
            for b in side_b:
                self.block(a, b)
                self.block(b, a)

    def reachable(self, src, dst):
        """Whether ``dst`` is listening and not cut off from ``src``."""
        return tuple(dst) in self._endpoints and (tuple(src), tuple(dst)) not in self._blocked

    def heal(self):
        self._blocked.clear()

    def stall(self, address, seconds):
        """Pause the node at ``address`` for ``seconds``, then resume it."""
        node_clock = self._node_clocks[tuple(address)]
        node_clock.pause()
        self.clock.callLater(seconds, node_clock.resume)

    def kill(self, address):
        """The node at ``address`` dies: no timers, no packets, ever."""
        address = tuple(address)
        self._endpoints.pop(address, None)
        if address in self._node_clocks:
            self._node_clocks[address].kill()
