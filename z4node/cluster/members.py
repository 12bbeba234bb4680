"""What the cluster knows about one member, and how changes are announced.

Owns: :class:`Member` (id, addresses, zone, capacity, incarnation, state)
with its wire forms (the ``alive`` message, the JSON of ``/_z4/peers`` and
push/pull), the member :class:`State`\ s, and :class:`MemberEvent`, what
subscribers of membership changes receive. Pure data: no clock, no I/O.
"""

import enum


class State(enum.Enum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


# States of members that are part of the cluster: probed, and believed up.
# A suspect stays: suspicion is not yet a verdict.
IN_CLUSTER = (State.ALIVE, State.SUSPECT)

# States of members that own data: the layout the ring is built from. The
# ring is not liveness (DESIGN.md): a dead member keeps its ranges until it
# is forgotten (``Membership.dead_retention``) or leaves, so a restart does
# not move 1/n of the store; liveness only decides where writes go meanwhile.
IN_LAYOUT = (State.ALIVE, State.SUSPECT, State.DEAD)


class Member:
    """One member as this node sees it.

    ``gossip`` and ``s3`` are ``(host, port)`` pairs; ``dht_port`` shares the
    gossip host. ``capacity`` is the relative ring weight (1.0 typical).
    ``last_heard`` is when this node last received a packet from it (None
    for a member known only through gossip).
    """

    __slots__ = (
        "id", "gossip", "dht_port", "s3", "zone", "capacity",
        "incarnation", "state", "state_since", "last_heard",
    )

    def __init__(self, id, gossip, dht_port, s3, zone=None, capacity=1.0,
                 incarnation=0, state=State.ALIVE, state_since=0.0, last_heard=None):
        self.id = id
        self.gossip = tuple(gossip)
        self.dht_port = dht_port
        self.s3 = tuple(s3)
        self.zone = zone
        self.capacity = capacity
        self.incarnation = incarnation
        self.state = state
        self.state_since = state_since
        self.last_heard = last_heard

    @property
    def dht(self):
        return (self.gossip[0], self.dht_port)

    def metadata(self):
        """What an alive message says besides id and incarnation."""
        return (self.gossip, self.dht_port, self.s3, self.zone, self.capacity)

    def alive_message(self):
        return {
            "t": "alive", "id": self.id, "inc": self.incarnation,
            "gossip": list(self.gossip), "dht": self.dht_port, "s3": list(self.s3),
            "zone": self.zone, "cap": self.capacity,
        }

    @classmethod
    def from_alive(cls, msg, now):
        return cls(
            msg["id"], tuple(msg["gossip"]), msg["dht"], tuple(msg["s3"]),
            msg.get("zone"), float(msg.get("cap", 1.0)), msg["inc"],
            State.ALIVE, now,
        )

    def copy(self):
        return Member(
            self.id, self.gossip, self.dht_port, self.s3, self.zone, self.capacity,
            self.incarnation, self.state, self.state_since, self.last_heard,
        )

    def to_json(self):
        """The member as ``/_z4/peers`` and the push/pull exchange show it."""
        return {
            "id": self.id, "state": self.state.value, "incarnation": self.incarnation,
            "gossip": list(self.gossip), "dht": list(self.dht), "s3": list(self.s3),
            "zone": self.zone, "capacity": self.capacity,
            "state_since": self.state_since, "last_heard": self.last_heard,
        }

    def __repr__(self):
        return f"<Member {self.id} {self.state.value} inc={self.incarnation}>"


class MemberEvent:
    """A change in the member table, delivered to subscribers.

    ``kind`` is one of:

    - ``joined``: a member became part of the cluster (new, or back from
      dead/left with a new incarnation);
    - ``updated``: an alive member's addresses, zone or capacity changed;
    - ``suspect``: a member is suspected (still in the cluster);
    - ``alive``: a suspect refuted and is alive again;
    - ``dead``: a member was declared dead: no longer alive, but it keeps
      its place in the layout (see :data:`IN_LAYOUT`);
    - ``left``: a member left gracefully (left the cluster and the layout);
    - ``forgotten``: a dead or left member was forgotten after the
      retention period (a dead one leaves the layout only now).

    ``member`` is a snapshot (a copy) taken when the event happened.
    ``changes_ring`` says whether the set placement depends on changed.
    """

    RING_KINDS = frozenset({"joined", "updated", "left", "forgotten"})

    __slots__ = ("kind", "member")

    def __init__(self, kind, member):
        self.kind = kind
        self.member = member

    @property
    def changes_ring(self):
        return self.kind in self.RING_KINDS

    def __repr__(self):
        return f"<MemberEvent {self.kind} {self.member.id}>"
