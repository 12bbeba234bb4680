"""What the replication layer's callers see when too few nodes answer, and
the one way it waits for "enough" of a set of calls."""

from twisted.internet.defer import Deferred


class QuorumNotReached(Exception):
    """Fewer nodes than a quorum acknowledged a write or answered a read."""


def majority(members):
    """The quorum of a replica set: a majority of it."""
    return len(members) // 2 + 1


async def first_successes(calls, needed):
    """How many of ``calls`` (Deferreds) succeeded, waiting only until
    ``needed`` have or all have settled; the rest keep going, and their
    failures are consumed (each caller counts what matters to it)."""
    if needed <= 0 or not calls:
        for d in calls:
            d.addErrback(lambda _: None)
        return 0
    done = Deferred()
    state = {"ok": 0, "settled": 0}

    def settled(result, ok):
        state["settled"] += 1
        state["ok"] += ok
        if not done.called and (state["ok"] >= needed or state["settled"] == len(calls)):
            done.callback(state["ok"])

    for d in calls:
        d.addCallbacks(settled, settled, callbackArgs=(1,), errbackArgs=(0,))
    return await done


async def quorum_successes(calls, sets):
    """The members whose call succeeded, once a majority of each of ``sets``
    (lists of members) has, or once one of them no longer can; ``calls``
    maps each member of the sets to its call (a Deferred). The rest keep
    going, and their failures are consumed."""
    done = Deferred()
    succeeded, failed = set(), set()

    def decided():
        reached = all(sum(m in succeeded for m in members) >= majority(members)
                      for members in sets)
        lost = any(sum(m in failed for m in members) > len(members) - majority(members)
                   for members in sets)
        return reached or lost or len(succeeded) + len(failed) == len(calls)

    def settled(result, member, ok):
        (succeeded if ok else failed).add(member)
        if not done.called and decided():
            done.callback(set(succeeded))

    for member, d in calls.items():
        d.addCallbacks(settled, settled, callbackArgs=(member, True),
                       errbackArgs=(member, False))
    if not calls:
        return set()
    return await done


def require_majorities(acked, sets, what):
    """Raise QuorumNotReached unless ``acked`` (members) holds a majority
    of each of ``sets``: the owners, then (while data moves) the owners in
    the ring it moves from."""
    for members, which in zip(sets, ("owners", "previous owners")):
        held, needed = sum(m in acked for m in members), majority(members)
        if held < needed:
            raise QuorumNotReached(f"{what}: {held} of the {needed} {which} needed "
                                   "hold the write")
