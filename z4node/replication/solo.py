"""The cluster of one node: what the replicated tables and the chunk
manager need of ``ClusterService`` when there are no peers (a node's
object layer before its cluster service exists, and unit tests).

With it every partition has one owner, this node, so a single node runs
the replicated code path with quorums of one (DESIGN.md: "A single node
is a cluster of one, through the same code path").
"""

from z4node.cluster.channel import RpcError


class _Local:
    def __init__(self, member_id):
        self.id = member_id


class SoloCluster:
    def __init__(self, member_id="local"):
        self.local = _Local(member_id)

    def owners(self, key, n=3):
        return [self.local.id]

    def previous_owners(self, key, n=3):
        return []

    def is_alive(self, member_id):
        return member_id == self.local.id

    def serve(self, op, handler):
        """Nobody calls a cluster of one."""

    async def call(self, member_id, op, args, body=None):
        raise RpcError(f"{op}: no member {member_id} in a cluster of one")
