"""What one peer call costs on the peer channel (``cluster.channel``), in
CPU per call on each side.

    python -m benchmarks.peer_call [--calls 4000] [--concurrency 16]

Starts a channel server in a child process, then, from this process, makes
``--calls`` small calls at ``--concurrency``: a ~200-byte argument (like a
table entry) answered with a result, and the same entry as a body sent
and answered with a body, as replicated reads and writes send it, once
streamed (an async iterable) and once given whole (bytes, which travel
inside the call and reply frames); then 64 calls with a 4 MiB body each
way (a chunk).
Prints calls/s and µs of CPU per call in the caller and in the server (user
+ system, from the processes' own counters), as a Markdown table.

The sealed-JSON-over-HTTP transport it was first compared with (treq to
``/_z4/rpc/``) was removed once push/pull moved to the channel; run this
script at commit f737094 to measure both again.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SECRET = "benchmark-cluster-secret-0123456789"
ENTRY = {"bucket": "photos", "key": "2026/holiday/IMG_0001.jpg", "hlc": 1 << 60,
         "etag": "9b2cf535f27731c974343645a3985328", "size": 1234567,
         "chunks": ["ab" * 32, "cd" * 32]}
CHUNK = 4 * 1024 * 1024


def serve(channel_port):
    """The server: echo, take and give a chunk."""
    from twisted.internet import asyncioreactor
    asyncioreactor.install()
    from twisted.internet import reactor

    from z4node.cluster.channel import ChannelFactory, Reply
    from z4node.cluster.sealing import Sealer, derive_key

    async def echo(peer, args, body):
        return Reply(args)

    async def entry(peer, args, body):
        data = await body.read_all(1 << 20)
        if args.get("whole"):
            return Reply({}, data)

        async def streamed():
            yield data
        return Reply({}, streamed())

    async def take(peer, args, body):
        size = 0
        async for piece in body:
            size += len(piece)
        return Reply({"size": size})

    async def give(peer, args, body):
        async def chunk():
            for _ in range(CHUNK // (1 << 20)):
                yield b"c" * (1 << 20)
        return Reply({}, chunk())

    key = derive_key(SECRET, b"channel")
    reactor.listenTCP(channel_port, ChannelFactory(
        reactor, Sealer(key, reactor), key, "server",
        {"echo": echo, "entry": entry, "take": take, "give": give}), interface="127.0.0.1")
    print("ready", flush=True)
    reactor.run()


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu(process):
    times = process.cpu_times()
    return times.user + times.system


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve)

    channel_port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.peer_call", "--serve", str(channel_port)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        results = run_client(channel_port, args.calls, args.concurrency,
                             psutil.Process(child.pid))
    finally:
        child.terminate()
        child.wait()
    print(f"{args.calls} small calls at concurrency {args.concurrency}; "
          f"64 chunk calls of {CHUNK >> 20} MiB\n")
    print("| transport | calls/s | caller CPU µs/call | server CPU µs/call |")
    print("|---|---:|---:|---:|")
    for name, rate, mine, theirs in results:
        print(f"| {name} | {rate:,.0f} | {mine:,.0f} | {theirs:,.0f} |")


def run_client(channel_port, calls, concurrency, server):
    from twisted.internet import asyncioreactor
    asyncioreactor.install()
    from twisted.internet import defer, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from z4node.cluster.channel import PeerChannel
    from z4node.cluster.members import Member
    from z4node.cluster.sealing import Sealer, derive_key

    me = psutil.Process()
    target = Member("server", ("127.0.0.1", channel_port), 2, ("127.0.0.1", 1))
    key = derive_key(SECRET, b"channel")

    def connect(member, protocol):
        return connectProtocol(TCP4ClientEndpoint(reactor, *member.gossip), protocol)

    channel = PeerChannel(reactor, Sealer(key, reactor), key, "client", connect)
    results = []

    async def measure(name, count, one):
        async def worker(n):
            for _ in range(n):
                await one()
        await one()  # connect and warm up outside the measurement
        started, mine, theirs = time.perf_counter(), cpu(me), cpu(server)
        await defer.gatherResults([defer.Deferred.fromCoroutine(worker(count // concurrency))
                                   for _ in range(concurrency)])
        elapsed = time.perf_counter() - started
        done = count // concurrency * concurrency
        results.append((name, done / elapsed, (cpu(me) - mine) / done * 1e6,
                        (cpu(server) - theirs) / done * 1e6))

    async def body():
        for _ in range(CHUNK // (1 << 20)):
            yield b"b" * (1 << 20)

    entry = json.dumps(ENTRY).encode("utf-8")

    async def streamed_entry():
        yield entry

    async def entry_call(whole):
        response = await channel.call(target, "entry", {"whole": whole},
                                      entry if whole else streamed_entry())
        await response.body.read_all(1 << 20)

    async def take():
        await channel.call(target, "take", {}, body())

    async def give():
        response = await channel.call(target, "give", {})
        await response.body.read_all(CHUNK)

    async def run():
        try:
            await measure("channel, small", calls,
                          lambda: channel.call(target, "echo", ENTRY))
            await measure("channel, small body each way, streamed", calls,
                          lambda: entry_call(False))
            await measure("channel, small body each way, whole (inline)", calls,
                          lambda: entry_call(True))
            await measure("channel, 4 MiB to the peer", 64, take)
            await measure("channel, 4 MiB from the peer", 64, give)
        finally:
            channel.close()
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(run()).addErrback(
        lambda f: (f.printTraceback(), reactor.stop())))
    reactor.run()
    return results


if __name__ == "__main__":
    main()
