"""The ``z4`` admin command and the node's local admin socket it talks to."""
