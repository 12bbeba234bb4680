"""Health checks for load balancers and process supervisors, under
``/_z4/health/`` on the S3 port.

Owns three answers, each a status code (200 or 503) and a short JSON body
``{"status": "ok"}`` or ``{"status": "unavailable", "reason": ...}``:

- ``live``: the process serves HTTP (restart it if this fails);
- ``ready``: the node has started, has joined the cluster if it was told
  to (``--join``), and sees a majority of the layout alive (send it
  traffic: its writes can reach quorum);
- ``cluster``: every member of the layout is alive (nothing is degraded).

They are unauthenticated, so they say nothing else: no ids, addresses,
counts or versions (those are in the admin views, :mod:`z4node.web.status`).
"""

from z4node.cluster.members import IN_CLUSTER, IN_LAYOUT, State
from z4node.web.json_resource import Z4Resource, write_json


def layout_liveness(membership):
    """(members in the layout, of them alive or suspect, of them alive)."""
    layout = membership.members(IN_LAYOUT)
    reachable = sum(1 for m in layout if m.state in IN_CLUSTER)
    alive = sum(1 for m in layout if m.state is State.ALIVE)
    return len(layout), reachable, alive


class NodeHealth:
    """The answers, from the node's state as it is now. ``ready`` is the
    node's Deferred that fires once it serves; ``cluster()`` returns its
    ClusterService (None until it exists); ``join_given`` whether the
    node was started with --join."""

    def __init__(self, ready, cluster, join_given):
        self._ready = ready
        self._cluster = cluster
        self._join_given = join_given

    def live(self):
        return None

    def ready(self):
        """None if ready, else the reason why not."""
        cluster = self._cluster()
        if not self._ready.called or cluster is None:
            return "starting"
        if self._join_given and not cluster.membership.joined:
            return "joining"
        layout, reachable, _ = layout_liveness(cluster.membership)
        if reachable * 2 <= layout:
            return "no majority of the layout alive"
        return None

    def cluster(self):
        """None if every layout member is alive, else the reason why not.
        A suspect member counts as not alive here: it is the first sign."""
        reason = self.ready()
        if reason is not None:
            return reason
        layout, _, alive = layout_liveness(self._cluster().membership)
        if alive < layout:
            return "not every layout member alive"
        return None


class _Check(Z4Resource):
    isLeaf = True

    def __init__(self, check):
        Z4Resource.__init__(self)
        self.check = check

    def render_GET(self, request):
        reason = self.check()
        if reason is None:
            return write_json(request, {"status": "ok"})
        return write_json(request, {"status": "unavailable", "reason": reason}, 503)


def make_health_resource(health):
    """The ``/_z4/health/`` resource answering from ``health`` (a
    :class:`NodeHealth`)."""
    root = Z4Resource()
    for name in ("live", "ready", "cluster"):
        root.putChild(name.encode("ascii"), _Check(getattr(health, name)))
    return root

