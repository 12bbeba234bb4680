"""Replication: the layer between the object model and the two below it
(``cluster`` for peers, ``storage`` for disks). What is here knows tables
and chunks, never S3 (DESIGN.md, "The layers")."""
