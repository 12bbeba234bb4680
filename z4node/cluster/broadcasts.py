"""The gossip waiting to be piggybacked on SWIM packets.

Owns: which membership messages go out next, how often each has gone
(each at most the retransmit limit), and fitting them into a byte budget.
"""

import json


class BroadcastQueue:
    """Gossip waiting to be piggybacked, at most one message per member.

    Each message is sent at most ``limit`` times (the caller's retransmit
    limit); the least-sent go first so new news spreads before old news is
    repeated. A newer message about a member replaces the older one.
    """

    def __init__(self):
        # member id -> [transmits, order, encoded message]
        self._items = {}
        self._order = 0

    def __len__(self):
        return len(self._items)

    def queue(self, member_id, message):
        self._order += 1
        self._items[member_id] = [0, -self._order, json.dumps(message, separators=(",", ":"))]

    def take(self, budget, limit):
        """Encoded messages fitting in ``budget`` bytes (JSON list overhead
        included), each counted as one more transmission."""
        chosen = []
        for member_id, item in sorted(self._items.items(), key=lambda kv: kv[1][:2]):
            cost = len(item[2]) + 1
            if cost > budget:
                continue
            budget -= cost
            chosen.append(item[2])
            item[0] += 1
            if item[0] >= limit:
                del self._items[member_id]
        return chosen
