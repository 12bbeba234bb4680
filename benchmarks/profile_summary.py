"""Summarize a ``py-spy record --threads --format raw`` profile: samples per
thread, then the reactor thread's top frames by self time and by
inclusive time (z4node's own functions).

    python benchmarks/profile_summary.py PROFILE.txt [--top 25]
"""

import argparse
import collections
import re

_THREAD = re.compile(r"^thread \((\w+)\): ([^;]*)$")


def parse(path):
    """{thread name: [(frames, count)]} from a raw py-spy file."""
    threads = collections.defaultdict(list)
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            name = "?"
            match = _THREAD.match(frames[0])
            if match:
                name = f"{match.group(2)} ({match.group(1)})"
                frames = frames[1:]
            threads[name].append((frames, int(count)))
    return threads


def summarize(path, top=25, reactor="MainThread"):
    threads = parse(path)
    total = sum(c for stacks in threads.values() for _, c in stacks)
    out = [f"{path}: {total} samples (idle samples left out)", "", "samples by thread:"]
    for name, stacks in sorted(threads.items(), key=lambda kv: -sum(c for _, c in kv[1])):
        n = sum(c for _, c in stacks)
        out.append(f"  {n:7d}  {100 * n / max(total, 1):5.1f}%  {name}")
    main = [stacks for name, stacks in threads.items() if name.startswith(reactor)]
    stacks = main[0] if main else []
    n = sum(c for _, c in stacks)
    self_time = collections.Counter()
    inclusive = collections.Counter()
    for frames, count in stacks:
        if frames:
            self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    out += ["", f"{reactor}: top {top} frames by self time ({n} samples):"]
    for frame, count in self_time.most_common(top):
        out.append(f"  {count:7d}  {100 * count / max(n, 1):5.1f}%  {frame}")
    out += ["", f"{reactor}: top {top} z4node frames by inclusive time:"]
    ours = [(f, c) for f, c in inclusive.most_common() if "z4node/" in f]
    for frame, count in ours[:top]:
        out.append(f"  {count:7d}  {100 * count / max(n, 1):5.1f}%  {frame}")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarize(args.profile, args.top), end="")


if __name__ == "__main__":
    main()
