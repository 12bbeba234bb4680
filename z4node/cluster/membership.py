"""SWIM membership with the Lifeguard refinements: who is in the cluster and
who is alive.

Owns: the member table (id, addresses, zone, capacity, incarnation, state),
failure detection over UDP (probe, indirect probe, suspicion, refutation),
dissemination of changes piggybacked on probe traffic, the join handshake,
graceful leave, and merging full states exchanged by the periodic push/pull.
Other parts of the node read :meth:`Membership.members` and subscribe to
:class:`MemberEvent`\\ s; nothing else changes the table.

It must not touch: sockets (it is a ``DatagramProtocol``; whoever starts it
listens), HTTP (the push/pull transport is a callable it is given), the ring
or the DHT (they subscribe to events), the global reactor or ``random``
(a clock and a seeded ``random.Random`` are injected).

The protocol is SWIM (Das, Gupta, Motivala 2002) as HashiCorp memberlist
runs it, with Lifeguard (Dadgar et al. 2018): local health scales the probe
interval (LHA-Probe), suspicion timeouts start long and shrink with
independent confirmations (LHA-Suspicion), and a suspect is told it is
suspected in the probe itself so it can refute at once (Buddy System).
Defaults are memberlist's LAN configuration. Two refinements are ours: a
timer that fires long after it was due means this node itself was stopped,
so it decides nothing on that timer (:attr:`Membership.stall_threshold`);
and a few members that hear of a suspicion probe the suspect next, so
confirmations come fast (:attr:`Membership.suspicion_verifiers`).

Wire format: each datagram (before sealing) is a JSON list of messages,
``{"t": type, ...}``; requests (``ping``, ``preq``, ``ack``, ``nack``,
``join``, ``welcome``) and gossip (``alive``, ``suspect``, ``dead``) are
told apart by type, and gossip is applied before requests so that an ack
carries any refutation the packet provoked.
"""

import json
import math

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from z4node.cluster.broadcasts import BroadcastQueue
from z4node.cluster.lifeguard import LocalHealth, Suspicion
from z4node.cluster.members import IN_CLUSTER, Member, MemberEvent, State
from z4node.cluster.sealing import SEAL_OVERHEAD


class _Probe:
    """One probe of one member by this node, direct then indirect."""

    __slots__ = ("seq", "target", "incarnation", "started", "deadline",
                 "acked", "nacks", "expected_nacks")

    def __init__(self, seq, target, started, deadline):
        self.seq = seq
        self.target = target
        # The incarnation probed: a failure only suspects that incarnation,
        # not a newer one the target announced while we waited.
        self.incarnation = target.incarnation
        self.started = started
        self.deadline = deadline
        self.acked = False
        self.nacks = 0
        self.expected_nacks = 0


class Membership(DatagramProtocol):
    """The SWIM member table of one node and the protocol that maintains it.

    ``local`` is this node's :class:`Member`; ``sealer`` seals and opens
    datagrams (:class:`~z4node.cluster.sealing.Sealer`); ``pushpull`` is
    ``f(member, state) -> Deferred(state)`` exchanging full states with a
    peer (the peer calls :meth:`merge_state` and answers :meth:`local_state`),
    or None to never push/pull.
    """

    log = Logger()

    # memberlist LAN defaults. Probe one member per second: a failure is
    # noticed within about one period wherever it is.
    probe_interval = 1.0  # seconds
    # Wait this long for a direct ack before asking others; LAN round trips
    # are well under 1 ms, so 500 ms means the packet (or the node) is lost.
    probe_timeout = 0.5  # seconds
    # Indirect probers per failed direct probe: three independent paths make
    # a false suspicion from packet loss alone improbable (5% loss: < 1e-4).
    indirect_checks = 3
    # A helper that gets no ack from the target nacks after this share of
    # the probe timeout: the requester's deadline falls one probe timeout
    # after it asked, so a nack sent at the full timeout would arrive just
    # too late to count. 80% leaves the nack its trip back.
    nack_fraction = 0.8
    # Suspicion lasts suspicion_mult * max(1, log10(n)) probe intervals once
    # fully confirmed, and up to suspicion_max_mult times that before.
    suspicion_mult = 4
    suspicion_max_mult = 6
    # On hearing a member suspected, this many members (in expectation) move
    # it to the front of their probe order, so Lifeguard's confirmations
    # arrive within about a period instead of a whole round-robin pass:
    # measured on 5 nodes, time until everyone declares a killed node dead
    # went from median 6.0 s, max 14.8 s to the figures in docs/cluster.md.
    # Three, not everyone, so a suspect in a large cluster is not flooded.
    suspicion_verifiers = 3
    # Each piggybacked update is sent retransmit_mult * ceil(log10(n + 1))
    # times: enough for it to reach everyone with high probability.
    retransmit_mult = 4
    # Largest datagram, sealed: fits a 1500-byte Ethernet MTU with headroom
    # for IP/UDP headers and tunnels, so nothing is ever fragmented.
    max_datagram = 1400  # bytes
    # Full state exchange with one random member: heals whatever gossip lost
    # and lets a node that was away converge in one round trip.
    pushpull_interval = 30.0  # seconds, scaled up beyond 32 members
    # A timer that fires this late was held up by this process being stopped
    # (SIGSTOP, swap, a long pause): probe results and suspicion deadlines
    # measured across the pause are about us, not the peer, so they are
    # re-armed instead of acted on.
    stall_threshold = 0.5  # seconds
    # Ask the --join peers again this often until one of them answers.
    join_retry_interval = 2.0  # seconds
    # Say so in the log after this many unanswered join attempts.
    join_warn_after = 5
    # A leaving node tells this many members directly, not only by gossip,
    # so the leave is known at once even if no probe comes by.
    leave_fanout = 3
    # Dead and left members are kept (and shown) this long, so late gossip
    # about them is recognised as old, then forgotten.
    dead_retention = 3600.0  # seconds
    # Log packets refused by the sealer at most once per source address per
    # this many seconds: enough to explain a misconfigured node, not a flood.
    refused_log_interval = 60.0  # seconds

    def __init__(self, clock, rng, sealer, local, pushpull=None):
        self._clock = clock
        self._rng = rng
        self._sealer = sealer
        self._pushpull = pushpull
        self.local = local
        local.state = State.ALIVE
        local.state_since = clock.seconds()
        self._members = {local.id: local}
        self._suspicions = {}
        self._broadcasts = BroadcastQueue()
        self._handlers = {}  # seq -> callable(message)
        self._timers = set()  # every pending call of ours, cancelled by stop()
        self._seq = 0
        self._probe_order = []
        self._probe_index = 0
        self._subscribers = []
        self.health = LocalHealth()
        self._running = False
        self._leaving = False
        self._join_call = None
        self._join_addrs = []
        self._join_attempts = 0
        self.joined = False
        self._refused_logged = {}  # source address -> when last logged
        self.counters = {
            "probes": 0, "probe_failures": 0, "indirect_probes": 0,
            "suspicions": 0, "refutations": 0, "deaths_declared": 0,
            "stalls_detected": 0, "pushpulls": 0, "pushpull_failures": 0,
            "packets_in": 0, "packets_out": 0, "malformed": 0,
            "internal_errors": 0,
        }
        self._broadcast_alive(local)

    # -- reading the table --------------------------------------------------

    def members(self, states=IN_CLUSTER):
        """Snapshots of the members in ``states`` (default: the cluster,
        alive and suspect), this node included, sorted by id."""
        return sorted(
            (m.copy() for m in self._members.values() if m.state in states),
            key=lambda m: m.id,
        )

    def all_members(self):
        """Every member known, dead and left ones included, sorted by id."""
        return self.members(tuple(State))

    def get(self, member_id):
        """A snapshot of one member, or None."""
        m = self._members.get(member_id)
        return m.copy() if m is not None else None

    def subscribe(self, callback):
        """Call ``callback(MemberEvent)`` on every change, synchronously."""
        self._subscribers.append(callback)

    def unsubscribe(self, callback):
        self._subscribers.remove(callback)

    def _emit(self, kind, member):
        event = MemberEvent(kind, member.copy())
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                self.log.failure("membership subscriber failed on {event}", event=event)

    def cluster_size(self):
        """n in the protocol's formulas: members alive or suspect, us included."""
        return sum(1 for m in self._members.values() if m.state in IN_CLUSTER)

    def retransmit_limit(self):
        return self.retransmit_mult * math.ceil(math.log10(self.cluster_size() + 1))

    def suspicion_bounds(self):
        """(minimum, maximum) suspicion timeout in seconds for the current n."""
        n = self.cluster_size()
        minimum = self.suspicion_mult * max(1.0, math.log10(max(1, n))) * self.probe_interval
        return minimum, minimum * self.suspicion_max_mult

    # -- starting and stopping ---------------------------------------------

    def start(self):
        """Begin probing and periodic push/pull. Call once listening."""
        self._running = True
        self._schedule_probe(self._rng.uniform(0, self.probe_interval))
        if self._pushpull is not None:
            self._schedule_pushpull()

    def join(self, addresses):
        """Ask the members at ``addresses`` ((host, port) gossip addresses)
        to let us in, retrying until one answers."""
        self._join_addrs = [tuple(a) for a in addresses]
        self._join_attempts = 0
        if self._join_addrs and not self.joined:
            self._try_join()

    def _try_join(self):
        self._join_call = None
        if self.joined or not self._running:
            return
        self._join_attempts += 1
        if self._join_attempts == self.join_warn_after:
            self.log.warn(
                "join: no authenticated answer from {addrs} after {n} attempts; "
                "still trying. If those nodes are up, they were started with a "
                "different cluster secret (they drop our packets and count them "
                "as 'forged' in /_z4/status).",
                addrs=", ".join(f"{h}:{p}" for h, p in self._join_addrs),
                n=self._join_attempts,
            )
        # The retry first: a send that raises must not end the joining.
        self._join_call = self._later(self.join_retry_interval, self._try_join)
        for address in self._join_addrs:
            self._send(address, [{"t": "join", "from": self.local.id}, self.local.alive_message()])

    def leave(self):
        """Leave gracefully: tell the cluster, stop probing.

        The leave travels as a ``dead`` message about ourselves from
        ourselves, which receivers record as ``left``; it is sent directly
        to a few members and queued as gossip.
        """
        if self._leaving:
            return
        self._leaving = True
        message = {"t": "dead", "id": self.local.id, "inc": self.local.incarnation,
                   "from": self.local.id}
        self._broadcasts.queue(self.local.id, message)
        peers = self.members((State.ALIVE,))
        peers = [m for m in peers if m.id != self.local.id]
        for member in self._rng.sample(peers, min(self.leave_fanout, len(peers))):
            self._send(member.gossip, [message])
        self.stop()

    def _later(self, delay, func, *args):
        """``clock.callLater``, remembered so that stop() can cancel it. A
        timer that raises is logged and counted (``internal_errors``); the
        periodic ones (probe, push/pull, join) schedule their next round
        whatever happened in this one, so none stops for good."""
        def run():
            self._timers.discard(call)
            try:
                func(*args)
            except Exception:
                self._internal_error(f"timer {func.__name__}")
        call = self._clock.callLater(delay, run)
        self._timers.add(call)
        return call

    def _internal_error(self, what, failure=None):
        """Log (with its traceback) and count a failure of our own code."""
        self.counters["internal_errors"] += 1
        self.log.failure("membership: {what} failed", failure, what=what)

    def stop(self):
        """Stop every timer. The table stays readable."""
        self._running = False
        for call in self._timers:
            if call.active():
                call.cancel()
        self._timers.clear()
        for suspicion in self._suspicions.values():
            suspicion.cancel()
        self._suspicions.clear()
        self._handlers.clear()

    # -- datagrams -----------------------------------------------------------

    def _send(self, address, messages, encoded_gossip=None):
        """Seal and send ``messages`` plus as much piggybacked gossip as fits."""
        if self.transport is None:
            return
        head = json.dumps(messages, separators=(",", ":"))
        if encoded_gossip is None:
            budget = self.max_datagram - SEAL_OVERHEAD - len(head) - 1
            encoded_gossip = self._broadcasts.take(budget, self.retransmit_limit())
        if encoded_gossip:
            head = head[:-1] + "," + ",".join(encoded_gossip) + "]"
        self.counters["packets_out"] += 1
        self.transport.write(self._sealer.seal(head.encode("utf-8")), tuple(address))

    def datagramReceived(self, datagram, address):
        payload = self._sealer.open(datagram)
        if payload is None:
            self._note_refused(address)
            return
        try:
            messages = json.loads(payload)
            if not isinstance(messages, list):
                raise ValueError("not a list")
        except ValueError:
            self.counters["malformed"] += 1
            return
        self.counters["packets_in"] += 1
        requests = []
        for message in messages:
            try:
                kind = message["t"]
                if kind in self._GOSSIP:
                    self._GOSSIP[kind](self, message)
                else:
                    requests.append(message)
            except (KeyError, TypeError, ValueError):
                self.counters["malformed"] += 1
        for message in requests:
            try:
                handler = self._REQUESTS.get(message["t"])
                if handler is not None:
                    handler(self, message, tuple(address))
            except (KeyError, TypeError, ValueError):
                self.counters["malformed"] += 1

    def _note_refused(self, address):
        last = self._refused_logged
        now = self._clock.seconds()
        if now - last.get(address, -math.inf) >= self.refused_log_interval:
            last[address] = now
            self.log.warn(
                "dropped a gossip packet from {host}:{port} that does not open "
                "with our cluster secret (a node started with another "
                "Z4_CLUSTER_KEY?), or that is replayed or stale; counts: {counts}",
                host=address[0], port=address[1], counts=self._sealer.counters()["dropped"],
            )

    def _heard_from(self, member_id):
        member = self._members.get(member_id)
        if member is not None:
            member.last_heard = self._clock.seconds()

    # -- requests ---------------------------------------------------------------

    def _on_ping(self, message, address):
        # A ping names its target: a ping meant for a previous owner of this
        # address (a restarted node with a new id) is not acked.
        if message["to"] != self.local.id:
            return
        self._heard_from(message["from"])
        self._send(address, [{"t": "ack", "seq": message["seq"], "from": self.local.id}])

    def _on_ack(self, message, address):
        self._heard_from(message["from"])
        handler = self._handlers.get(message["seq"])
        if handler is not None:
            handler(message)

    _on_nack = _on_ack

    def _on_ping_req(self, message, address):
        """Probe ``to`` on the requester's behalf; ack back if it answers,
        nack after a probe timeout if it does not and a nack was asked for."""
        self._heard_from(message["from"])
        origin_seq = message["seq"]
        seq = self._next_seq()
        state = {"done": False}

        def on_reply(reply):
            if reply["t"] == "ack" and not state["done"]:
                state["done"] = True
                self._send(address, [{"t": "ack", "seq": origin_seq, "from": self.local.id}])

        def on_timeout():
            if not state["done"] and message.get("nack"):
                state["done"] = True
                self._send(address, [{"t": "nack", "seq": origin_seq, "from": self.local.id}])

        def forget():
            self._handlers.pop(seq, None)

        self._handlers[seq] = on_reply
        self._later(self.probe_timeout * self.nack_fraction, on_timeout)
        # The requester gives up after its probe interval; so do we.
        self._later(self.probe_interval, forget)
        self._send(tuple(message["addr"]),
                   [{"t": "ping", "seq": seq, "to": message["to"], "from": self.local.id}])

    def _on_join(self, message, address):
        # The joiner's alive message rode in the same packet and was applied
        # already; answer with ours so it learns our addresses.
        if message["from"] == self.local.id:
            return  # our own --join list named us
        self._heard_from(message["from"])
        self._send(address, [{"t": "welcome", "from": self.local.id}, self.local.alive_message()])

    def _on_welcome(self, message, address):
        self._heard_from(message["from"])
        if self.joined or message["from"] == self.local.id:
            return
        self.joined = True
        if self._join_call is not None and self._join_call.active():
            self._join_call.cancel()
        self._join_call = None
        peer = self._members.get(message["from"])
        self.log.info("joined the cluster through {peer}", peer=message["from"])
        if peer is not None and self._pushpull is not None:
            self._exchange_state(peer)

    _REQUESTS = {
        "ping": _on_ping, "ack": _on_ack, "nack": _on_nack, "preq": _on_ping_req,
        "join": _on_join, "welcome": _on_welcome,
    }

    def _next_seq(self):
        self._seq += 1
        return self._seq

    # -- probing -------------------------------------------------------------

    def _schedule_probe(self, delay):
        self._later(delay, self._probe_tick)

    def _next_target(self):
        """The next member in randomized round-robin order, or None.

        Every member is probed once per pass over a shuffled list; a new
        member is inserted at a random place in the current pass, so it is
        probed within one pass (SWIM section 4.3).
        """
        for _ in range(2):
            while self._probe_index < len(self._probe_order):
                member = self._members.get(self._probe_order[self._probe_index])
                self._probe_index += 1
                if member is not None and member.state in IN_CLUSTER and member is not self.local:
                    return member
            self._probe_order = sorted(
                m.id for m in self._members.values()
                if m.state in IN_CLUSTER and m is not self.local
            )
            self._rng.shuffle(self._probe_order)
            self._probe_index = 0
        return None

    def _add_to_probe_order(self, member_id):
        position = self._rng.randint(self._probe_index, len(self._probe_order))
        self._probe_order.insert(position, member_id)

    def _probe_tick(self):
        if not self._running:
            return
        interval = self.health.scale(self.probe_interval)
        target = self._next_target()
        if target is None:
            self._schedule_probe(interval)
            return
        self.counters["probes"] += 1
        now = self._clock.seconds()
        probe = _Probe(self._next_seq(), target, now, now + interval)
        self._handlers[probe.seq] = lambda reply: self._probe_reply(probe, reply)
        messages = [{"t": "ping", "seq": probe.seq, "to": target.id, "from": self.local.id}]
        if target.state is State.SUSPECT:
            # Buddy system: tell the suspect directly, so it can refute now
            # rather than when the gossip happens to reach it.
            messages.append({"t": "suspect", "id": target.id, "inc": target.incarnation,
                             "from": self.local.id})
        # The deadline, which starts the next probe period, first: a send
        # that raises must not end the probing.
        self._later(interval, self._probe_deadline, probe)
        self._later(self.probe_timeout, self._probe_indirect, probe)
        self._send(target.gossip, messages)

    def _probe_reply(self, probe, reply):
        if reply["t"] == "nack":
            probe.nacks += 1
            return
        if probe.acked:
            return
        probe.acked = True
        target = self._members.get(probe.target.id)
        if target is not None:
            target.last_heard = self._clock.seconds()

    def _late(self, due):
        """True if a timer due at ``due`` fired late enough that this node
        must have been stalled."""
        late = self._clock.seconds() - due > self.stall_threshold
        if late:
            self.counters["stalls_detected"] += 1
        return late

    def _probe_indirect(self, probe):
        if probe.acked or not self._running:
            return
        if self._late(probe.started + self.probe_timeout):
            return  # judged at the deadline, which will be late too
        candidates = [
            m for m in self._members.values()
            if m.state is State.ALIVE and m is not self.local and m.id != probe.target.id
        ]
        helpers = self._rng.sample(candidates, min(self.indirect_checks, len(candidates)))
        probe.expected_nacks = len(helpers)
        self.counters["indirect_probes"] += len(helpers)
        request = {"t": "preq", "seq": probe.seq, "to": probe.target.id,
                   "addr": list(probe.target.gossip), "from": self.local.id, "nack": True}
        for helper in helpers:
            self._send(helper.gossip, [request])

    def _probe_deadline(self, probe):
        self._handlers.pop(probe.seq, None)
        if not self._running:
            return
        try:
            self._judge_probe(probe)
        finally:
            # The deadline ends this probe period, whatever the verdict
            # did: the next one starts now.
            self._probe_tick()

    def _judge_probe(self, probe):
        if self._late(probe.deadline):
            # We were stopped: the silence we measured is ours. Count it
            # against our own health and accuse nobody.
            self.health.apply(1)
        elif probe.acked:
            self.health.apply(-1)
        else:
            self.counters["probe_failures"] += 1
            # LHA-Probe: missing nacks mean our own packets are not getting
            # through (the helpers are alive and would have nacked); with no
            # helpers any failure counts against us.
            if probe.expected_nacks:
                self.health.apply(probe.expected_nacks - probe.nacks)
            else:
                self.health.apply(1)
            self._suspect({"id": probe.target.id, "inc": probe.incarnation,
                           "from": self.local.id})

    # -- push/pull -----------------------------------------------------------

    def _pushpull_period(self):
        # memberlist's pushPullScale: beyond 32 members, push/pull less often
        # (x2 at 64, x3 at 128...) so the full-state traffic each node
        # receives stays bounded as the cluster grows.
        n = self.cluster_size()
        if n <= 32:
            return self.pushpull_interval
        return self.pushpull_interval * (math.ceil(math.log2(n) - math.log2(32)) + 1)

    def _schedule_pushpull(self):
        period = self._pushpull_period()
        # Randomised so the whole cluster does not push/pull in lock step.
        self._later(
            period * self._rng.uniform(0.5, 1.5), self._pushpull_tick)

    def _pushpull_tick(self):
        if not self._running:
            return
        try:
            self._pushpull_round()
        finally:
            self._schedule_pushpull()

    def _pushpull_round(self):
        alive = [m for m in self._members.values()
                 if m.state is State.ALIVE and m is not self.local]
        dead = [m for m in self._members.values() if m.state is State.DEAD]
        # Now and then push/pull with a member we think dead (Serf's
        # reconnect): after a partition heals, that is how the two sides
        # learn of each other again — the "dead" side refutes on merge.
        # Chosen in proportion to the dead share, so a healthy cluster
        # spends nothing on it.
        if dead and self._rng.random() < len(dead) / (len(dead) + len(alive)):
            self._exchange_state(self._rng.choice(dead))
        elif alive:
            self._exchange_state(self._rng.choice(alive))

    def _exchange_state(self, peer):
        self.counters["pushpulls"] += 1
        d = self._pushpull(peer.copy(), self.local_state())

        def merged(state):
            if self._running:
                self.merge_state(state)

        def failed(failure):
            self.counters["pushpull_failures"] += 1
            self.log.debug("push/pull with {peer} failed: {why}", peer=peer.id,
                           why=failure.getErrorMessage())

        d.addCallbacks(merged, failed)
        # A merge that raised is our bug, not the peer's: logged, counted,
        # never an unhandled error.
        d.addErrback(lambda f: self._internal_error(f"merging {peer.id}'s state", f))
        return d

    def local_state(self):
        """This node's full member table, as push/pull sends it."""
        return {"from": self.local.id,
                "members": [m.to_json() for m in self._members.values()]}

    def merge_state(self, state):
        """Merge a peer's full table (memberlist's mergeState).

        Alive entries are applied as alive messages. A peer's suspect or dead
        verdict only makes us *suspect* (we do not take another node's word
        for a death: the suspect gets its chance to refute); left is final.
        """
        sender = state["from"]
        for entry in state["members"]:
            try:
                member_state = State(entry["state"])
                if member_state is State.ALIVE:
                    self._alive({
                        "id": entry["id"], "inc": entry["incarnation"],
                        "gossip": entry["gossip"], "dht": entry["dht"][1],
                        "s3": entry["s3"], "zone": entry["zone"], "cap": entry["capacity"],
                    })
                elif member_state is State.LEFT:
                    self._dead({"id": entry["id"], "inc": entry["incarnation"],
                                "from": entry["id"]})
                else:
                    self._suspect({"id": entry["id"], "inc": entry["incarnation"],
                                   "from": sender})
            except (KeyError, TypeError, ValueError, IndexError):
                self.counters["malformed"] += 1

    # -- gossip: alive, suspect, dead ---------------------------------------

    def _broadcast_alive(self, member):
        self._broadcasts.queue(member.id, member.alive_message())

    def _set_state(self, member, state):
        member.state = state
        member.state_since = self._clock.seconds()

    def _refute(self, incarnation):
        """Someone says we are suspect/dead (or impersonates us): overrule it
        with a higher incarnation."""
        self.local.incarnation = max(self.local.incarnation, incarnation) + 1
        self.counters["refutations"] += 1
        # Being suspected is a sign our own packets are late: Lifeguard
        # counts it against our health.
        self.health.apply(1)
        self._broadcast_alive(self.local)

    def _alive(self, message):
        member_id = message["id"]
        incarnation = int(message["inc"])
        if member_id == self.local.id:
            if self._leaving:
                return
            fresh = Member.from_alive(message, 0)
            if incarnation > self.local.incarnation or (
                incarnation == self.local.incarnation
                and fresh.metadata() != self.local.metadata()
            ):
                self._refute(incarnation)
            return
        now = self._clock.seconds()
        member = self._members.get(member_id)
        if member is None:
            member = Member.from_alive(message, now)
            self._members[member_id] = member
            self._add_to_probe_order(member_id)
            self._broadcast_alive(member)
            self.log.info("member {id} joined", id=member_id)
            self._emit("joined", member)
            return
        if incarnation <= member.incarnation:
            return
        fresh = Member.from_alive(message, now)
        previous_state = member.state
        changed = fresh.metadata() != member.metadata()
        member.gossip, member.dht_port, member.s3 = fresh.gossip, fresh.dht_port, fresh.s3
        member.zone, member.capacity = fresh.zone, fresh.capacity
        member.incarnation = incarnation
        suspicion = self._suspicions.pop(member_id, None)
        if suspicion is not None:
            suspicion.cancel()
        self._broadcast_alive(member)
        if previous_state is State.ALIVE:
            if changed:
                self._emit("updated", member)
            return
        self._set_state(member, State.ALIVE)
        if previous_state is State.SUSPECT:
            self.log.info("member {id} refuted suspicion", id=member_id)
            self._emit("alive", member)
            if changed:
                self._emit("updated", member)
        else:
            self._add_to_probe_order(member_id)
            self.log.info("member {id} is back", id=member_id)
            self._emit("joined", member)

    def _suspect(self, message):
        member_id = message["id"]
        incarnation = int(message["inc"])
        origin = message["from"]
        member = self._members.get(member_id)
        if member is None or incarnation < member.incarnation:
            return
        if member is self.local:
            if not self._leaving:
                self._refute(incarnation)
            return
        if member.state is State.SUSPECT:
            if incarnation == member.incarnation:
                suspicion = self._suspicions.get(member_id)
                if suspicion is not None and suspicion.confirm(origin):
                    self._broadcasts.queue(member_id, {"t": "suspect", "id": member_id,
                                                       "inc": incarnation, "from": origin})
                return
        elif member.state is not State.ALIVE:
            return
        self.counters["suspicions"] += 1
        member.incarnation = incarnation
        self._set_state(member, State.SUSPECT)
        n = self.cluster_size()
        # Lifeguard: expect suspicion_mult - 2 independent confirmations, or
        # none in a cluster too small to provide them.
        k = self.suspicion_mult - 2 if n - 2 >= self.suspicion_mult - 2 else 0
        minimum, maximum = self.suspicion_bounds()
        previous = self._suspicions.pop(member_id, None)
        if previous is not None:
            previous.cancel()
        self._suspicions[member_id] = Suspicion(
            self._clock, origin, k, minimum, maximum,
            lambda: self._suspicion_expired(member_id, incarnation),
        )
        self._broadcasts.queue(member_id, {"t": "suspect", "id": member_id,
                                           "inc": incarnation, "from": origin})
        if origin != self.local.id and self._rng.random() < \
                self.suspicion_verifiers / max(1, n - 2):
            self._probe_order.insert(self._probe_index, member_id)
        self.log.info("member {id} suspected (by {origin})", id=member_id, origin=origin)
        self._emit("suspect", member)

    def _suspicion_expired(self, member_id, incarnation):
        suspicion = self._suspicions.get(member_id)
        member = self._members.get(member_id)
        if suspicion is None or member is None or not self._running:
            return
        if self._late(suspicion.due):
            # Refutations may be waiting unread in our socket buffer.
            suspicion.postpone(self.probe_interval)
            return
        if member.state is State.SUSPECT and member.incarnation == incarnation:
            self.counters["deaths_declared"] += 1
            self._dead({"id": member_id, "inc": incarnation, "from": self.local.id})

    def _dead(self, message):
        member_id = message["id"]
        incarnation = int(message["inc"])
        member = self._members.get(member_id)
        if member is None or incarnation < member.incarnation:
            return
        if member.state in (State.DEAD, State.LEFT):
            return
        if member is self.local:
            if not self._leaving:
                self._refute(incarnation)
            return
        suspicion = self._suspicions.pop(member_id, None)
        if suspicion is not None:
            suspicion.cancel()
        member.incarnation = incarnation
        left = message["from"] == member_id
        self._set_state(member, State.LEFT if left else State.DEAD)
        self._broadcasts.queue(member_id, {"t": "dead", "id": member_id,
                                           "inc": incarnation, "from": message["from"]})
        self.log.info("member {id} {verdict}", id=member_id,
                      verdict="left" if left else "declared dead")
        self._emit("left" if left else "dead", member)
        self._later(self.dead_retention, self._forget, member_id, member.state_since)

    def _forget(self, member_id, since):
        member = self._members.get(member_id)
        if member is not None and member.state in (State.DEAD, State.LEFT) \
                and member.state_since == since:
            del self._members[member_id]
            self._emit("forgotten", member)

    _GOSSIP = {"alive": _alive, "suspect": _suspect, "dead": _dead}

    def set_capacity(self, capacity):
        """Announce a new capacity for this node (0: it is draining and owns
        nothing), with a new incarnation, so every member rebuilds its ring."""
        self.local.capacity = capacity
        self.local.incarnation += 1
        self._broadcast_alive(self.local)
        self._emit("updated", self.local)

    @property
    def has_joined(self):
        """Whether this node knows the cluster: a ``--join`` (or a remembered
        peer) answered, or there was nobody to join."""
        return self.joined or not self._join_addrs

    # -- status ---------------------------------------------------------------

    def status(self):
        """Health and counters for ``/_z4/status``."""
        by_state = {s.value: 0 for s in State}
        for m in self._members.values():
            by_state[m.state.value] += 1
        minimum, maximum = self.suspicion_bounds()
        return {
            "members": by_state,
            "incarnation": self.local.incarnation,
            "joined": self.has_joined,
            "health_score": self.health.score,
            "probe_interval": self.health.scale(self.probe_interval),
            "suspicion_timeout": [minimum, maximum],
            "retransmit_limit": self.retransmit_limit(),
            "pending_broadcasts": len(self._broadcasts),
            "counters": dict(self.counters),
            "packets": self._sealer.counters(),
        }
