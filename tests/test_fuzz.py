"""The fuzz test of a node's HTTP surface (the fuzzer is tests/fuzzing.py).

The suite's run is short: 1,500 requests, stopped early after 150 s on a
very loaded box. A long run is the same test with more requests (see
docs/fuzzing.md)::

    Z4_FUZZ_REQUESTS=25000 Z4_FUZZ_SECONDS=1800 trial --reactor=asyncio tests.test_fuzz

The seed is random unless ``Z4_FUZZ_SEED`` gives it; it is printed first,
and in the failure message, so that any run can be replayed.
"""

import os
import random

from twisted.trial.unittest import TestCase

from tests.fuzzing import Fuzzer
from tests.nodeprocess import NodeProcess

REQUESTS = int(os.environ.get("Z4_FUZZ_REQUESTS", "1500"))
# A cap, not an assertion: past it the run stops sending and judges what it has.
SECONDS = float(os.environ.get("Z4_FUZZ_SECONDS", "150"))


class FuzzTests(TestCase):
    def test_s3_surface(self):
        seed = os.environ.get("Z4_FUZZ_SEED")
        seed = int(seed) if seed else random.SystemRandom().randrange(2 ** 32)
        print(f"\nfuzz seed {seed} (replay: Z4_FUZZ_SEED={seed})")
        # Trusting 127.0.0.1's X-Forwarded-Proto lets SSE-C requests in over HTTP.
        node = NodeProcess(self, args=["--trusted-proxy", "127.0.0.1"]).start()
        fuzzer = Fuzzer(node, random.Random(seed))
        fuzzer.run(REQUESTS, SECONDS)
        print(fuzzer.summary())
        if fuzzer.findings:
            self.fail(f"\nZ4_FUZZ_SEED={seed}: {len(fuzzer.findings)} classes of failure\n"
                      f"{fuzzer.summary()}\n\n{fuzzer.failures()}")
