"""Tests for z4node.objects.checksums: published check values, agreement
with botocore's own checksum classes, and incremental updates."""

import base64

from botocore import httpchecksum
from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from z4node.objects.checksums import ALGORITHMS, algorithm_from_header, header_name, new_checksum
from z4node.objects.errors import ObjectError

# The "check" values of each algorithm over b"123456789" (the CRC catalogue's
# convention) and the FIPS 180 "abc" digests.
CHECK = {
    "CRC32": ("cbf43926", b"123456789"),
    "CRC32C": ("e3069283", b"123456789"),
    "CRC64NVME": ("ae8b14860a799888", b"123456789"),
    "SHA1": ("a9993e364706816aba3e25717850c26c9cd0d89d", b"abc"),
    "SHA256": ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", b"abc"),
}

# What botocore sends in x-amz-checksum-* for the same algorithm.
BOTOCORE = {
    "CRC32": httpchecksum.CrtCrc32Checksum,
    "CRC32C": httpchecksum.CrtCrc32cChecksum,
    "CRC64NVME": httpchecksum.CrtCrc64NvmeChecksum,
    "SHA1": httpchecksum.Sha1Checksum,
    "SHA256": httpchecksum.Sha256Checksum,
}


class CheckValueTests(SynchronousTestCase):
    def test_check_values(self):
        for algorithm, (expected, data) in CHECK.items():
            checksum = new_checksum(algorithm)
            checksum.update(data)
            self.assertEqual(checksum.digest().hex(), expected, algorithm)
            self.assertEqual(checksum.b64(), base64.b64encode(bytes.fromhex(expected)).decode(), algorithm)

    def test_empty(self):
        self.assertEqual(new_checksum("CRC32").b64(), "AAAAAA==")
        self.assertEqual(new_checksum("CRC64NVME").digest(), bytes(8))
        self.assertEqual(new_checksum("SHA256").digest().hex(),
                         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")

    def test_aws_trailer_example_value(self):
        # AWS's trailing-header example sends this CRC32C for 66560 bytes of "a".
        checksum = new_checksum("CRC32C")
        checksum.update(b"a" * 65536)
        checksum.update(b"a" * 1024)
        self.assertEqual(checksum.b64(), "sOO8/Q==")

    def test_algorithm_names_are_case_insensitive(self):
        checksum = new_checksum("crc32c")
        checksum.update(b"123456789")
        self.assertEqual(checksum.digest().hex(), "e3069283")

    def test_accepts_buffers(self):
        for algorithm in ALGORITHMS:
            one, two = new_checksum(algorithm), new_checksum(algorithm)
            one.update(b"xyz")
            two.update(memoryview(bytearray(b"xyz")))
            self.assertEqual(one.digest(), two.digest(), algorithm)

    @given(st.sampled_from(ALGORITHMS), st.binary(max_size=2000), st.lists(st.integers(0, 2000)))
    def test_incremental_equals_whole_and_botocore(self, algorithm, data, cuts):
        whole = new_checksum(algorithm)
        whole.update(data)
        pieces = new_checksum(algorithm)
        start = 0
        for cut in sorted(cuts):
            pieces.update(data[start:cut])
            start = max(start, cut)
        pieces.update(data[start:])
        reference = BOTOCORE[algorithm]()
        reference.update(data)
        self.assertEqual(pieces.digest(), whole.digest())
        self.assertEqual(whole.b64(), reference.b64digest())


class NameTests(SynchronousTestCase):
    def test_header_names_round_trip(self):
        for algorithm in ALGORITHMS:
            self.assertEqual(algorithm_from_header(header_name(algorithm)), algorithm)
        self.assertEqual(header_name("crc64nvme"), "x-amz-checksum-crc64nvme")
        self.assertEqual(algorithm_from_header("X-Amz-Checksum-CRC32C"), "CRC32C")

    def test_unknown_algorithm(self):
        for call, argument in [(new_checksum, "MD5"), (header_name, "XXHASH64"),
                               (algorithm_from_header, "x-amz-checksum-md5"),
                               (algorithm_from_header, "content-md5")]:
            error = self.assertRaises(ObjectError, call, argument)
            self.assertEqual(error.code, "InvalidRequest")
