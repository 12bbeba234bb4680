"""Damage for tests of what the node does with bad data on disk."""


def flip_a_byte(path, offset=10):
    """Invert the byte at ``offset`` of the file at ``path`` (bit rot)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))
