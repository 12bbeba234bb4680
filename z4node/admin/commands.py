"""What the admin socket can be asked: key and bucket management, the
node key's rotation and metadata snapshots. Each command takes and returns
plain JSON-able values; the CLI formats them."""

import os
import sqlite3

from twisted.internet.threads import deferToThreadPool

from z4node.admin.backup import SnapshotError, take_snapshot
from z4node.objects.errors import ObjectError
from z4node.objects.kms import KmsUnavailable
from z4node.objects.system import AdminError
from z4node.s3 import authorization
from z4node.storage.crypto import EncryptionKeyError, parse_node_key
from z4node.storage.rotation import RotationError


def _key_summary(key):
    return {"name": key.name, "access_key_id": key.access_key_id,
            "user_id": key.user_id, "display_name": key.name,
            "admin": key.is_admin, "created": key.created}


def _grant_summary(grant):
    return {"bucket": grant.bucket, "key_id": grant.access_key_id,
            "read": grant.can_read or grant.can_own,
            "write": grant.can_write or grant.can_own, "owner": grant.can_own}


class AdminCommands:
    def __init__(self, node):
        self._node = node
        self._system = node.system
        self._objects = node.objects
        self._commands = {
            "key.create": self.key_create, "key.list": self.key_list,
            "key.info": self.key_info, "key.delete": self.key_delete,
            "bucket.create": self.bucket_create, "bucket.list": self.bucket_list,
            "bucket.allow": self.bucket_allow, "bucket.deny": self.bucket_deny,
            "encryption.status": self.encryption_status,
            "encryption.rotate": self.encryption_rotate,
            "scrub.status": self.scrub_status, "scrub.start": self.scrub_start,
            "scrub.pause": self.scrub_pause,
            "gc.status": self.gc_status, "gc.run": self.gc_run,
            "cluster.drain": self.cluster_drain,
            "cluster.drain.status": self.cluster_drain_status,
            "cluster.repair": self.cluster_repair,
            "cluster.repair.status": self.cluster_repair_status,
            "meta.snapshot": self.meta_snapshot,
            "kms.key.create": self.kms_key_create, "kms.key.list": self.kms_key_list,
            "kms.key.info": self.kms_key_info, "kms.rewrap": self.kms_rewrap,
        }
        self._snapshotting = False

    async def run(self, command, args):
        handler = self._commands.get(command)
        if handler is None:
            raise AdminError(f"unknown command {command!r}")
        try:
            return await handler(**args)
        except TypeError as e:
            raise AdminError(f"bad arguments for {command}: {e}") from None
        except ObjectError as e:
            raise AdminError(e.message or e.code) from None
        except KmsUnavailable as e:
            raise AdminError(str(e)) from None

    def _key(self, name):
        key = self._system.key_by_name(name)
        if key is None:
            raise AdminError(f"no key named {name!r}")
        return key

    async def key_create(self, name):
        key = await self._system.create_key(name)
        return dict(_key_summary(key), secret_access_key=key.secret)

    async def key_list(self):
        return [_key_summary(k) for k in self._system.keys()]

    async def key_info(self, name, show_secret=False):
        key = self._key(name)
        info = _key_summary(key)
        info["grants"] = [_grant_summary(g) for g in self._system.grants_of_key(key.access_key_id)]
        info["can_do"] = ("everything (admin key), unless a bucket policy denies it"
                          if key.is_admin else
                          "list buckets, create buckets, and on buckets what follows")
        # Asked of the same decision function as every S3 request.
        info["may"] = [] if key.is_admin else authorization.summarize(self._system, key)
        if show_secret:
            info["secret_access_key"] = key.secret
        return info

    async def key_delete(self, name):
        key = await self._system.delete_key(name)
        return _key_summary(key)

    async def bucket_create(self, name, owner=None):
        key = self._key(owner) if owner else self._system.key_by_name("admin")
        bucket = await self._objects.create_bucket(name, key)
        return {"name": bucket.name, "owner": key.name, "created": bucket.created}

    async def bucket_list(self):
        names = self._system.user_names()
        return [{"name": b.name, "owner": names.get(b.owner, b.owner), "created": b.created,
                 "grants": len(self._system.grants_on_bucket(b.name)),
                 "policy": "policy" in b.settings,
                 "public": authorization.bucket_is_public(b)}
                for b in self._system.buckets()]

    def _bucket(self, name):
        if self._system.bucket(name) is None:
            raise AdminError(f"no bucket named {name!r}")

    async def bucket_allow(self, bucket, key, read=False, write=False, owner=False):
        self._bucket(bucket)
        target = self._key(key)
        if not (read or write or owner):
            raise AdminError("say what to allow: --read, --write and/or --owner")
        old = self._system.grant(bucket, target.access_key_id)
        grant = await self._system.set_grant(
            bucket, target.access_key_id,
            read or bool(old and old.can_read), write or bool(old and old.can_write),
            owner or bool(old and old.can_own))
        return _grant_summary(grant)

    async def bucket_deny(self, bucket, key, read=False, write=False, owner=False):
        self._bucket(bucket)
        target = self._key(key)
        old = self._system.grant(bucket, target.access_key_id)
        remove_all = not (read or write or owner)
        grant = await self._system.set_grant(
            bucket, target.access_key_id,
            bool(old and old.can_read) and not (remove_all or read),
            bool(old and old.can_write) and not (remove_all or write),
            bool(old and old.can_own) and not (remove_all or owner))
        return _grant_summary(grant)

    # -- KMS keys ------------------------------------------------------------

    async def kms_key_create(self, name):
        kms = self._node.kms
        return kms.summary(await kms.create(name))

    async def kms_key_list(self):
        kms = self._node.kms
        return [kms.summary(k) for k in self._system.kms_keys()]

    async def kms_key_info(self, name):
        """A KMS key by name, alias/NAME, id or ARN."""
        kms = self._node.kms
        kms_key = kms.find(name) or self._system.kms_key_by_name(name)
        if kms_key is None:
            raise AdminError(f"no KMS key named {name!r}")
        return kms.summary(kms_key)

    async def kms_rewrap(self):
        """After a KMS master key rotation: every KMS key wrapped anew."""
        return {"rewrapped": await self._node.kms.rewrap()}

    # -- encryption ----------------------------------------------------------

    async def cluster_drain(self):
        """Begin draining this node: it leaves the ring, and its data moves
        to the others (see ``cluster_drain_status``)."""
        cluster = self._node.cluster
        if cluster is None:
            raise AdminError("the node is still starting; try again in a moment")
        others = [m for m in cluster.ring.member_ids if m != cluster.local.id]
        if not others:
            raise AdminError("no other node takes data: draining would leave its data "
                             "nowhere")
        await cluster.drain()
        return self._node.rebalance.status()

    async def cluster_drain_status(self):
        return self._node.rebalance.status()

    async def cluster_repair(self):
        """Start an anti-entropy pass (this node's records and chunks
        compared with their other owners'), or one more after the pass
        under way; its status, and ``until``: the value of ``passes`` once
        that pass is done."""
        if self._node.cluster is None:
            raise AdminError("the node is still starting; try again in a moment")
        until = self._node.antientropy.start_pass()
        return dict(self._node.antientropy.status(), until=until)

    async def cluster_repair_status(self):
        return self._node.antientropy.status()

    async def gc_status(self):
        return self._node.gc.status()

    async def gc_run(self):
        """A garbage-collection pass now, with a sweep of the chunk files
        if none is under way; what it deleted, and the totals."""
        chunks, tombstones = await self._node.gc.collect(sweep_now=True)
        return dict(self._node.gc.status(), deleted_chunks=chunks,
                    deleted_tombstones=tombstones)

    async def scrub_status(self):
        return self._node.scrubber.status()

    async def scrub_start(self):
        """Resume scrubbing, beginning a pass now if none is under way."""
        if not self._node.scrubber.running:
            raise AdminError("scrubbing is off on this node (--scrub-rate 0)")
        await self._node.scrubber.start_now()
        return self._node.scrubber.status()

    async def scrub_pause(self):
        await self._node.scrubber.pause()
        return self._node.scrubber.status()

    async def encryption_status(self):
        rotation = self._node.rotation
        if rotation is None:
            return {"encrypted": False}
        return dict(rotation.status(), encrypted=True)

    async def encryption_rotate(self, new_key=None, max_rate=None):
        """Start a rotation to ``new_key`` (hex or base64), rewrapping at
        most ``max_rate`` data keys a second if given, or resume the
        recorded one; fires at once, the walk goes on in the node."""
        rotation = self._node.rotation
        if rotation is None:
            raise AdminError("this node's data dir is not encrypted: there is no node "
                             "key to rotate (docs/security.md)")
        if new_key is None:
            if rotation.state is None:
                raise AdminError("no rotation is in progress: give the new key")
            rotation.resume()
            return await self.encryption_status()
        try:
            key = parse_node_key(new_key, name="the new key")
        except EncryptionKeyError as e:
            raise AdminError(str(e)) from None
        if max_rate is not None and not (isinstance(max_rate, (int, float)) and max_rate > 0):
            raise AdminError("max_rate is a number of data keys a second, above 0")
        try:
            await rotation.start(key, max_rate=max_rate)
        except RotationError as e:
            raise AdminError(str(e)) from None
        return await self.encryption_status()

    # -- backup --------------------------------------------------------------

    async def meta_snapshot(self, path):
        """Write a consistent snapshot of the node's metadata to ``path``
        (absolute, new, somewhere the node may write), on a thread of the
        reactor's pool: the copy blocks for as long as it reads the file."""
        if not isinstance(path, str) or not os.path.isabs(path):
            raise AdminError("give the snapshot's absolute path")
        if self._snapshotting:
            raise AdminError("a snapshot is being taken already; wait for it")
        self._snapshotting = True
        reactor = self._node.reactor
        try:
            return await deferToThreadPool(reactor, reactor.getThreadPool(), take_snapshot,
                                           self._node.meta_path, path)
        except SnapshotError as e:
            raise AdminError(str(e)) from None
        except OSError as e:
            raise AdminError(f"cannot write {path}: {e.strerror}") from None
        except sqlite3.Error as e:
            raise AdminError(f"the snapshot failed: {e}") from None
        finally:
            self._snapshotting = False
