"""The system tables: access keys, buckets, grants and KMS keys.

They are small and every request consults them, so they live in memory,
loaded once at start and written through to the metadata store (each change
durable before it is visible). Every row carries an HLC timestamp and a
delete is a tombstone, so they are replicated to every node and merged
last-writer-wins (:meth:`SystemTables.replicate_with`, over
``z4node.replication.everywhere``): a change made here is acknowledged once
a majority of the cluster holds it, and one made elsewhere is merged here
as it arrives. Who may do what with them is decided in
``z4node.s3.authorization``, not here.
"""

import base64
import dataclasses
import hashlib
import json
import os
import re

from twisted.internet.defer import DeferredLock

from z4node.objects.errors import ObjectError
from z4node.replication.errors import QuorumNotReached
from z4node.storage.meta import AccessKey, Bucket, Grant, KmsKey, live_bucket_owner

# S3's rules for new bucket names: 3-63 characters of lower-case letters,
# digits, dots and hyphens, starting and ending with a letter or digit, not
# shaped like an IP address, no adjacent dots, none of the reserved prefixes
# and suffixes AWS reserves.
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


def valid_bucket_name(name):
    return bool(
        _BUCKET_NAME.match(name)
        and ".." not in name
        and ".-" not in name and "-." not in name
        and not _IP_ADDRESS.match(name)
        and not name.startswith(_RESERVED_PREFIXES)
        and not name.endswith(_RESERVED_SUFFIXES))


class AdminError(Exception):
    """An admin request that cannot be carried out; the message says why."""


class SystemTables:
    """In-memory view of keys, buckets and grants, written through to meta."""

    def __init__(self, meta, hlc, clock, random_bytes=os.urandom):
        self._meta = meta
        self._hlc = hlc
        self._clock = clock
        self._random_bytes = random_bytes
        self._keys = {}
        self._buckets = {}
        self._grants = {}
        self._kms_keys = {}
        self._settings_lock = DeferredLock()
        self._replication = None

    # -- replication -----------------------------------------------------------

    def replicate_with(self, everywhere):
        """Keep these tables on every node through ``everywhere`` (an
        :class:`~z4node.replication.everywhere.EverywhereTables`)."""
        self._replication = everywhere
        everywhere.register("keys", lambda: self._entries(self._keys),
                            lambda entry: self._merge(AccessKey, self._keys, entry))
        everywhere.register("buckets", lambda: self._entries(self._buckets),
                            lambda entry: self._merge(Bucket, self._buckets, entry))
        everywhere.register("grants", lambda: self._entries(self._grants),
                            lambda entry: self._merge(Grant, self._grants, entry))
        everywhere.register("kms_keys", lambda: self._entries(self._kms_keys),
                            lambda entry: self._merge(KmsKey, self._kms_keys, entry))

    @staticmethod
    def _entries(table):
        return [(_entry_id(record), record.hlc, dataclasses.asdict(record))
                for record in table.values()]

    async def _merge(self, cls, table, entry):
        """Apply an entry that arrived from a peer, if it is newer than ours;
        ValueError for one that is malformed or from too far in the future."""
        try:
            record = cls(**entry)
        except TypeError:
            raise ValueError(f"not a {cls.__name__} entry") from None
        if not isinstance(record.hlc, int):
            raise ValueError("an entry's hlc must be an integer")
        if not self._hlc.observe(record.hlc):
            raise ValueError("the entry's timestamp is too far ahead of this node's clock")
        current = table.get(_entry_key(record))
        if current is not None and current.hlc >= record.hlc:
            return
        if cls is Bucket and (record.deleted or current is None or current.deleted
                              or current.created != record.created):
            # A bucket deleted, or made anew under a used name: this node's
            # share of what it held goes, as on the node that deleted it.
            now = self._clock.seconds()
            meta = self._meta
            await meta.save_bucket(
                record, lambda c: meta.purge_bucket_contents(c, record.name, now))
        else:
            await _SAVE[cls](self._meta, record)
        # Another, newer entry may have landed while this one was saved.
        current = table.get(_entry_key(record))
        if current is None or current.hlc < record.hlc:
            table[_entry_key(record)] = record

    async def _store(self, table, record):
        """Save a local change, make it visible, and spread it; ObjectError
        ServiceUnavailable if a majority of the cluster does not hold it."""
        await _SAVE[type(record)](self._meta, record)
        await self._spread(table, record)

    async def _spread(self, table, record):
        """Make a saved local change visible and send it to the cluster."""
        table[_entry_key(record)] = record
        if self._replication is None:
            return
        try:
            await self._replication.publish(_TABLE_NAME[type(record)],
                                            dataclasses.asdict(record))
        except QuorumNotReached as e:
            raise ObjectError("ServiceUnavailable", f"Too few nodes answered: {e}") from None

    async def load(self):
        """Load the tables, and seed the clock past every timestamp the node
        has stored (in any table, object versions included) or promised,
        so that a restart with the wall clock set back cannot issue an
        older timestamp; from then on the clock keeps its high-water mark."""
        self._hlc.seed(await self._meta.newest_hlc())
        self._hlc.persist_with(self._meta.save_hlc_mark)
        keys, buckets, grants = await self._meta.load_system_tables()
        for key in keys:
            self._keys[key.access_key_id] = key
        for bucket in buckets:
            self._buckets[bucket.name] = bucket
        for grant in grants:
            self._grants[(grant.bucket, grant.access_key_id)] = grant
        for kms_key in await self._meta.load_kms_keys():
            self._kms_keys[kms_key.key_id] = kms_key

    # -- access keys ---------------------------------------------------------

    def key_by_id(self, access_key_id):
        key = self._keys.get(access_key_id)
        return None if key is None or key.deleted else key

    def key_by_name(self, name):
        # Two nodes that each made a key of the same name before they met
        # both keep theirs; the oldest answers to the name, on every node.
        named = [k for k in self._keys.values() if k.name == name and not k.deleted]
        return min(named, key=lambda k: (k.created, k.access_key_id), default=None)

    def keys(self):
        return sorted((k for k in self._keys.values() if not k.deleted),
                      key=lambda k: k.name)

    def key_by_user_id(self, user_id):
        for key in self._keys.values():
            if key.user_id == user_id and not key.deleted:
                return key
        return None

    def key_was_deleted(self, access_key_id):
        """Whether ``access_key_id`` named a key that has been deleted."""
        key = self._keys.get(access_key_id)
        return key is not None and key.deleted

    def secret_for(self, access_key_id):
        key = self.key_by_id(access_key_id)
        return key.secret if key is not None else None

    async def create_key(self, name, is_admin=False, access_key_id=None,
                         secret=None):
        if not _KEY_NAME.match(name):
            raise AdminError(
                "key names are 1-64 letters, digits, '_', '.', '@' or '-'")
        if self.key_by_name(name) is not None:
            raise AdminError(f"a key named {name!r} exists already")
        if access_key_id is None:
            access_key_id = "Z4" + base64.b32encode(
                self._random_bytes(15)).decode("ascii")[:18]
        if secret is None:
            secret = base64.b64encode(self._random_bytes(30)).decode("ascii")
        if self.key_by_id(access_key_id) is not None:
            raise AdminError("that access key id is in use")
        user_id = hashlib.sha256(b"z4node-user:" + access_key_id.encode()).hexdigest()
        key = AccessKey(access_key_id, name, secret, user_id, is_admin,
                        self._clock.seconds(), self._hlc.now())
        await self._store(self._keys, key)
        return key

    async def delete_key(self, name):
        key = self.key_by_name(name)
        if key is None:
            raise AdminError(f"no key named {name!r}")
        tombstone = AccessKey(key.access_key_id, key.name, key.secret,
                              key.user_id, key.is_admin, key.created,
                              self._hlc.now(), deleted=True)
        await self._store(self._keys, tombstone)
        for (bucket, akid) in list(self._grants):
            if akid == key.access_key_id:
                await self.set_grant(bucket, akid, False, False, False)
        return key

    def user_names(self):
        """Canonical user id -> display name (the key's name)."""
        return {k.user_id: k.name for k in self._keys.values()}

    # -- buckets -------------------------------------------------------------

    def bucket(self, name):
        bucket = self._buckets.get(name)
        return None if bucket is None or bucket.deleted else bucket

    def buckets(self):
        return sorted((b for b in self._buckets.values() if not b.deleted),
                      key=lambda b: b.name)

    async def create_bucket(self, name, owner_key, settings=None):
        """Create a bucket owned by ``owner_key``; the key gets an owner grant.

        Checked and done in one transaction: a live bucket of that name
        (created meanwhile) is refused, and a name used before starts
        empty, whatever its last incarnation left behind."""
        now = self._clock.seconds()
        bucket = Bucket(name, owner_key.user_id, now, self._hlc.now(), dict(settings or {}))
        meta = self._meta

        def fresh(c):
            owner = live_bucket_owner(c, name)
            if owner is not None:
                raise ObjectError("BucketAlreadyOwnedByYou" if owner == owner_key.user_id
                                  else "BucketAlreadyExists")
            meta.purge_bucket_contents(c, name, now)

        await self._meta.save_bucket(bucket, fresh)
        await self._spread(self._buckets, bucket)
        await self.set_grant(name, owner_key.access_key_id, True, True, True)
        return bucket

    async def update_bucket_settings(self, name, update):
        """Change a bucket's settings: ``update(settings)`` changes the dict
        it is given (a copy) in place, and may raise to refuse. The new
        settings get a new HLC timestamp, so they replicate as one
        last-writer-wins value; they are durable before they are visible."""
        # One change at a time: two concurrent ones would each start from
        # the settings before the other, and one would be lost.
        await self._settings_lock.acquire()
        try:
            bucket = self.bucket(name)
            if bucket is None:
                raise ObjectError("NoSuchBucket")
            settings = json.loads(json.dumps(bucket.settings))
            update(settings)
            updated = Bucket(name, bucket.owner, bucket.created, self._hlc.now(), settings)
            await self._store(self._buckets, updated)
            return updated
        finally:
            self._settings_lock.release()

    async def delete_bucket(self, name, precondition):
        """Tombstone a bucket; ``precondition(c)`` runs in the transaction
        (it checks emptiness and purges what an empty bucket leaves)."""
        bucket = self.bucket(name)
        tombstone = Bucket(name, bucket.owner, bucket.created, self._hlc.now(),
                           bucket.settings, deleted=True)
        await self._meta.save_bucket(tombstone, precondition)
        await self._spread(self._buckets, tombstone)
        for (b, akid) in list(self._grants):
            if b == name:
                await self.set_grant(b, akid, False, False, False)

    # -- grants --------------------------------------------------------------

    def grant(self, bucket, access_key_id):
        return self._grants.get((bucket, access_key_id))

    def grants_of_key(self, access_key_id):
        return [g for g in self._grants.values()
                if g.access_key_id == access_key_id
                and (g.can_read or g.can_write or g.can_own)
                and self.bucket(g.bucket) is not None]

    def grants_on_bucket(self, bucket):
        return [g for g in self._grants.values()
                if g.bucket == bucket and (g.can_read or g.can_write or g.can_own)]

    async def set_grant(self, bucket, access_key_id, can_read, can_write, can_own):
        grant = Grant(bucket, access_key_id, can_read, can_write, can_own,
                      self._hlc.now())
        await self._store(self._grants, grant)
        return grant

    # -- KMS keys (their material is wrapped; objects.kms opens it) ----------

    def kms_key(self, key_id):
        key = self._kms_keys.get(key_id)
        return None if key is None or key.deleted else key

    def kms_key_by_name(self, name):
        # As for access keys: the oldest of two same-named keys answers.
        named = [k for k in self._kms_keys.values() if k.name == name and not k.deleted]
        return min(named, key=lambda k: (k.created, k.key_id), default=None)

    def kms_keys(self):
        return sorted((k for k in self._kms_keys.values() if not k.deleted),
                      key=lambda k: k.name)

    async def add_kms_key(self, key_id, name, wrapped, master_id):
        """Store a new KMS key (its material ``wrapped`` by the master key
        ``master_id``), unless its name is taken."""
        if not _KEY_NAME.match(name):
            raise AdminError(
                "KMS key names are 1-64 letters, digits, '_', '.', '@' or '-'")
        if self.kms_key_by_name(name) is not None:
            raise AdminError(f"a KMS key named {name!r} exists already")
        key = KmsKey(key_id, name, wrapped, master_id, self._clock.seconds(),
                     self._hlc.now())
        await self._store(self._kms_keys, key)
        return key

    async def rewrap_kms_key(self, key, wrapped, master_id):
        """Store a KMS key's material wrapped anew (a master key rotation)."""
        key = KmsKey(key.key_id, key.name, wrapped, master_id, key.created,
                     self._hlc.now())
        await self._store(self._kms_keys, key)
        return key


def _entry_key(record):
    """The key a record has in its in-memory table."""
    if isinstance(record, AccessKey):
        return record.access_key_id
    if isinstance(record, Bucket):
        return record.name
    if isinstance(record, KmsKey):
        return record.key_id
    return (record.bucket, record.access_key_id)


def _entry_id(record):
    """The same key as one string, for digests."""
    key = _entry_key(record)
    return "\0".join(key) if isinstance(key, tuple) else key


_TABLE_NAME = {AccessKey: "keys", Bucket: "buckets", Grant: "grants", KmsKey: "kms_keys"}
_SAVE = {AccessKey: lambda meta, r: meta.save_key(r),
         KmsKey: lambda meta, r: meta.save_kms_key(r),
         Bucket: lambda meta, r: meta.save_bucket(r),
         Grant: lambda meta, r: meta.save_grant(r)}
