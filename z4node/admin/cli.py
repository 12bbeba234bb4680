"""``z4``: the admin command. It talks to a running node through the admin
socket in the node's data dir (``--data``, default ``./data``)."""

import argparse
import getpass
import json
import os
import socket
import sys
import time
from contextlib import nullcontext

from z4node.admin.backup import META_FILE, SnapshotError, restore_snapshot
from z4node.admin.cluster_cli import ClusterCliError, add_cluster_commands
from z4node.admin.output import ProgressDisplay, size, table
from z4node.admin.server import SocketPath


class CliError(Exception):
    pass


def call(data_dir, command, **args):
    """Send one command to the node owning ``data_dir``; its result."""
    try:
        path = SocketPath(data_dir)
    except FileNotFoundError:
        raise CliError(f"no data dir at {data_dir}") from None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(path.usable)
            s.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
            reply = b""
            while not reply.endswith(b"\n"):
                piece = s.recv(65536)
                if not piece:
                    break
                reply += piece
    except (FileNotFoundError, ConnectionRefusedError):
        raise CliError(f"no node is running with data dir {data_dir} "
                       f"(no admin socket at {path.real})") from None
    except PermissionError:
        raise CliError(f"permission denied on {path.real}: run z4 as the node's user") from None
    finally:
        path.close()
    try:
        answer = json.loads(reply)
    except ValueError:
        raise CliError("the node closed the connection without an answer") from None
    if not answer.get("ok"):
        raise CliError(answer.get("error", "the node refused the command"))
    return answer["result"]


def _records(rows, columns):
    """Rows of dicts as a table of the given (title, field) columns."""
    return table([title for title, _ in columns],
                 [[_cell(row.get(field)) for _, field in columns] for row in rows])


def _cell(value):
    if isinstance(value, bool):
        return "yes" if value else "-"
    if isinstance(value, float):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value))
    return "" if value is None else str(value)


def _fields(document, names):
    return "\n".join(f"{title}: {_cell(document.get(field))}" for title, field in names)


def key_create(args):
    result = call(args.data, "key.create", name=args.name)
    return result, _fields(result, [("Name", "name"), ("Access key id", "access_key_id"),
                                    ("Secret access key", "secret_access_key"),
                                    ("User id", "user_id")]) + \
        "\n(the secret is shown only now; `z4 key info NAME --show-secret` shows it again)"


def key_list(args):
    result = call(args.data, "key.list")
    return result, _records(result, [("NAME", "name"), ("ACCESS KEY ID", "access_key_id"),
                                  ("ADMIN", "admin"), ("CREATED", "created")])


def key_info(args):
    result = call(args.data, "key.info", name=args.name, show_secret=args.show_secret)
    fields = [("Name", "name"), ("Access key id", "access_key_id"), ("User id", "user_id"),
              ("Admin", "admin"), ("Created", "created"), ("May", "can_do")]
    if args.show_secret:
        fields.insert(2, ("Secret access key", "secret_access_key"))
    text = _fields(result, fields)
    if result["grants"]:
        text += "\n\n" + _records(result["grants"], [("BUCKET", "bucket"), ("READ", "read"),
                                                  ("WRITE", "write"), ("OWNER", "owner")])
    else:
        text += "\n\nNo bucket grants."
    text += _may_text(result)
    return result, text


def _may_text(result):
    """What the key may do on each bucket (grants, policies and ACLs
    together), as ``z4 key info`` prints it."""
    if result["admin"]:
        return ""
    if not result.get("may"):
        return "\n\nNo bucket access through grants, bucket policies or bucket ACLs."
    lines = ["", "", "Bucket access (grants, bucket policies and bucket ACLs; object ACLs "
             "may allow more):"]
    for entry in result["may"]:
        lines.append(f"  {entry['bucket']} (by {', '.join(entry['via'])})")
        if entry["always"]:
            lines.append(f"    always: {', '.join(entry['always'])}")
        if entry["sometimes"]:
            lines.append("    depending on the request (conditions, keys): "
                         f"{', '.join(entry['sometimes'])}")
    return "\n".join(lines)


def key_delete(args):
    result = call(args.data, "key.delete", name=args.name)
    return result, f"Deleted key {result['name']} ({result['access_key_id']})."


_KMS_FIELDS = [("Name", "name"), ("Key id", "key_id"), ("ARN", "arn"),
               ("Alias", "alias"), ("Created", "created"),
               ("Master key id", "master_key_id"), ("Usable", "usable"),
               ("Needs rewrap", "needs_rewrap")]


def kms_key_create(args):
    result = call(args.data, "kms.key.create", name=args.name)
    return result, _fields(result, _KMS_FIELDS)


def kms_key_list(args):
    result = call(args.data, "kms.key.list")
    return result, _records(result, [("NAME", "name"), ("KEY ID", "key_id"),
                                     ("USABLE", "usable")])


def kms_key_info(args):
    result = call(args.data, "kms.key.info", name=args.name)
    return result, _fields(result, _KMS_FIELDS)


def kms_rewrap(args):
    result = call(args.data, "kms.rewrap")
    names = ", ".join(result["rewrapped"]) or "none: every KMS key was wrapped by it already"
    return result, f"KMS keys wrapped by the current KMS master key: {names}."


def gc_command(args):
    result = call(args.data, args.command)
    text = _fields(dict(result, bytes_freed=size(result["bytes_freed"])), [
        ("Passes", "runs"), ("Failed passes", "failures"),
        ("Chunk files deleted", "chunks_deleted"), ("Bytes freed", "bytes_freed"),
        ("Tombstones dropped", "tombstones_dropped")])
    if "deleted_chunks" in result:
        text = (f"This pass deleted {result['deleted_chunks']} chunk files and "
                f"{result['deleted_tombstones']} tombstones.\n" + text)
    return result, text


# How often `z4 scrub status --watch` asks the node how far the pass is.
SCRUB_POLL_SECONDS = 1.0


def scrub_command(args):
    result = call(args.data, args.command)
    if getattr(args, "watch", False):
        result = watch_scrub(args, result)
    return result, _scrub_text(result)


def _scrub_text(result):
    state = "paused" if result["paused"] else ("running" if result["running"] else "off")
    where = ("between passes" if result["cursor"] is None
             else f"at directory {result['cursor'] or '(start)'}")
    return _fields(dict(result, state=state, where=where), [
        ("Scrub", "state"), ("Position", "where"), ("Passes done", "passes"),
        ("Last pass finished", "last_pass_finished"), ("Chunks verified", "chunks_verified"),
        ("Bytes verified", "bytes_verified"), ("Bad chunks found", "bad_found"),
        ("Healed", "healed"), ("Unrecoverable", "unrecoverable"),
        ("Rate (bytes/s)", "rate")])


def chunk_files(data_dir, cursor):
    """(chunk files in the data dir, those in leaf directories up to
    ``cursor``, the ones a scrub pass at ``cursor`` has done), or (None, 0)
    if the CLI may not read chunks/ (run as another user): names only, no
    stat, so it is cheap next to the scrub it measures."""
    root = os.path.join(data_dir, "chunks")
    total = done = 0
    try:
        for top in sorted(os.listdir(root)):
            for mid in sorted(os.listdir(os.path.join(root, top))):
                names = os.listdir(os.path.join(root, top, mid))
                count = sum(1 for name in names if not name.endswith(".tmp"))
                total += count
                if cursor and f"{top}/{mid}" <= cursor:
                    done += count
    except OSError:
        return None, 0
    return total, done


def watch_scrub(args, status, console=None, sleep=time.sleep):
    """Follow the running scrub pass with a progress bar until it ends or
    pauses; the last status. Chunks are counted once, at the start: the bar
    is a guide, the node's counters are the truth."""
    if status["cursor"] is None or status["paused"] or not status["running"]:
        return status
    total, done = chunk_files(args.data, status["cursor"])
    start_chunks, passes = status["chunks_verified"], status["passes"]
    with (nullcontext() if args.json
          else ProgressDisplay("scrub", total, "chunks", console)) as bar:
        while True:
            if bar is not None:
                verified = done + status["chunks_verified"] - start_chunks
                bar.update(verified if total is None else min(verified, total),
                           description=f"scrub ({size(status['bytes_verified'])} "
                                       "verified in all)")
            if status["cursor"] is None or status["passes"] != passes or status["paused"]:
                break
            sleep(SCRUB_POLL_SECONDS)
            status = call(args.data, "scrub.status")
        if bar is not None:
            bar.finish("scrub paused" if status["paused"] else "scrub pass done")
    return status


# How often `z4 cluster drain --watch` asks the node how far the move is.
DRAIN_POLL_SECONDS = 1.0


def drain_command(args, console=None, sleep=time.sleep):
    status = call(args.data, "cluster.drain")
    if args.watch and not status["drained"]:
        with (nullcontext() if args.json
              else ProgressDisplay("drain", 100, "%", console)) as bar:
            while not status["drained"]:
                if bar is not None:
                    bar.update(round(100 * (status["progress"] or 0)),
                               description=f"drain ({status['moved_chunks']} chunks, "
                                           f"{size(status['moved_bytes'])} moved)")
                sleep(DRAIN_POLL_SECONDS)
                status = call(args.data, "cluster.drain.status")
            if bar is not None:
                bar.finish("drained")
    return status, _drain_text(status)


def _drain_text(status):
    if status["drained"]:
        return ("Drained: this node holds no last copy of anything; it can be stopped "
                "and its data dir removed.")
    last = status["last_pass"] or {}
    left = ", ".join(f"{last[k]} {k.replace('_', ' ')}" for k in
                     ("unplaced", "unplaced_buckets", "kept_copies") if last.get(k))
    return (f"Draining: {status['state']}"
            + (f" ({round(100 * status['progress'])}%)" if status["progress"] is not None
               else "")
            + f"; {status['moved_chunks']} chunks ({size(status['moved_bytes'])}) moved"
            + (f"; the last pass left {left} (a node was down), the next one retries"
               if left else "")
            + ". Do not stop the node until `z4 cluster drain` says it is drained.")


# How often `z4 cluster repair` asks the node how far its pass is.
REPAIR_POLL_SECONDS = 0.5


def repair_command(args, console=None, sleep=time.sleep):
    """Start an anti-entropy pass and follow it with a progress bar (syncs
    done of those planned) until it is done."""
    status = call(args.data, "cluster.repair")
    until = status["until"]
    with (nullcontext() if args.json
          else ProgressDisplay("anti-entropy", None, "syncs", console)) as bar:
        while status["passes"] < until:
            progress = status["progress"]
            if bar is not None and progress is not None:
                bar.update(progress["done"], total=progress["total"])
            sleep(REPAIR_POLL_SECONDS)
            status = call(args.data, "cluster.repair.status")
        if bar is not None:
            bar.finish("anti-entropy pass done")
    last, chunks = status["last_pass"], status["chunks"]
    return status, (f"Anti-entropy pass done in {last['seconds']:.1f} s: {last['repaired']} "
                    f"entries and chunks repaired (since start: entries {status['pulled']} "
                    f"pulled, {status['pushed']} pushed; chunks {chunks['chunks_pulled']} "
                    f"pulled, {chunks['chunks_pushed']} pushed; "
                    f"{status['sync_failures'] + chunks['sync_failures']} syncs failed).")


def bucket_create(args):
    result = call(args.data, "bucket.create", name=args.name, owner=args.owner)
    return result, f"Created bucket {result['name']} (owner {result['owner']})."


def bucket_list(args):
    result = call(args.data, "bucket.list")
    return result, _records(result, [("NAME", "name"), ("OWNER", "owner"),
                                  ("CREATED", "created"), ("GRANTS", "grants"),
                                  ("POLICY", "policy"), ("PUBLIC", "public")])


def _grant_text(result, bucket, key):
    rights = [r for r in ("read", "write", "owner") if result[r]]
    return f"Key {key} on bucket {bucket}: {', '.join(rights) if rights else 'no access'}."


def bucket_allow(args):
    result = call(args.data, "bucket.allow", bucket=args.bucket, key=args.key,
                  read=args.read, write=args.write, owner=args.owner)
    return result, _grant_text(result, args.bucket, args.key)


def bucket_deny(args):
    result = call(args.data, "bucket.deny", bucket=args.bucket, key=args.key,
                  read=args.read, write=args.write, owner=args.owner)
    return result, _grant_text(result, args.bucket, args.key)


NEW_KEY_ENV = "Z4_NEW_ENCRYPTION_KEY"
# How often `z4 encryption rotate` asks the node how far it is.
ROTATION_POLL_SECONDS = 0.2


def encryption_status(args):
    result = call(args.data, "encryption.status")
    if not result["encrypted"]:
        return result, "Encryption at rest: off (the data dir was created without a node key)."
    if not result["rotating"]:
        text = f"Encryption at rest: on, node key {result['key_id']}."
        if result.get("finished"):
            text += (f"\nA rotation finished at {_cell(result['finished'])} UTC: restart "
                     "the node with the new key in Z4_ENCRYPTION_KEY.")
        return result, text
    total = result["total"]
    percent = min(100 * result["done"] // total, 100) if total else 0
    return result, (f"Encryption at rest: on, rotating node key {result['from']} -> "
                    f"{result['to']}\n{min(result['done'], total):,}/{total:,} data keys "
                    f"rewrapped ({percent}%)"
                    + ("" if result["running"] else "\n(paused: `z4 encryption rotate` resumes it)"))


def _new_key(args):
    """The new node key's text: --new-key-file, $Z4_NEW_ENCRYPTION_KEY, or
    typed at a prompt; never a command-line argument (ps shows those)."""
    if args.new_key_file:
        try:
            with (sys.stdin if args.new_key_file == "-" else open(args.new_key_file)) as f:
                return f.readline().strip()
        except OSError as e:
            raise CliError(f"cannot read {args.new_key_file}: {e.strerror}") from None
    if os.environ.get(NEW_KEY_ENV):
        return os.environ[NEW_KEY_ENV].strip()
    if sys.stdin.isatty():
        key = getpass.getpass("New node key (64 hex digits or base64): ").strip()
        if key and getpass.getpass("Again: ").strip() == key:
            return key
        raise CliError("the two keys typed differ")
    raise CliError(f"give the new node key: --new-key-file PATH (or -) or ${NEW_KEY_ENV}")


def encryption_rotate(args):
    status = call(args.data, "encryption.status")
    if not status["encrypted"]:
        raise CliError("this node's data dir is not encrypted: there is no node key to rotate")
    if status["rotating"]:
        # Resume (after a crash or a stop); a key, if given, must be the target.
        new_key = _new_key(args) if (args.new_key_file or os.environ.get(NEW_KEY_ENV)) else None
        status = call(args.data, "encryption.rotate", new_key=new_key)
    else:
        status = call(args.data, "encryption.rotate", new_key=_new_key(args),
                      max_rate=args.max_rate)
    target = status.get("to", status.get("key_id"))
    if args.no_wait:
        return status, f"Rotating to node key {target}; `z4 encryption status` shows progress."
    # No bar for a rotation that ended before this first look (nothing to show).
    with (ProgressDisplay("rewrapping data keys", status["total"], "keys")
          if status.get("rotating") and not args.json else nullcontext()) as bar:
        while status.get("rotating"):
            if bar is not None:
                bar.update(min(status["done"], status["total"]), total=status["total"])
            time.sleep(ROTATION_POLL_SECONDS)
            try:
                status = call(args.data, "encryption.status")
            except CliError as e:
                raise CliError(f"{e}\nThe rotation is recorded in the data dir: it "
                               "carries on when the node starts again (with the old or "
                               "the new key); run `z4 encryption rotate` to watch "
                               "it.") from None
        if bar is not None:
            bar.update(bar.total)
            bar.finish("data keys rewrapped")
    return status, (f"Rotation finished: the data dir's node key is now {status['key_id']}.\n"
                    "Set Z4_ENCRYPTION_KEY to the new key before the node's next start: "
                    "the old key no longer opens this data dir.")


def backup(args):
    result = call(args.data, "meta.snapshot", path=os.path.abspath(args.path))
    return result, (f"Snapshot of node {result['node_id']}'s metadata written to "
                    f"{result['path']} ({result['bytes']:,} bytes).\n"
                    + _snapshot_needs(result))


def restore(args):
    from z4node.node import DataDirInUse, lock_data_dir

    os.makedirs(args.data, mode=0o700, exist_ok=True)
    try:
        lock = lock_data_dir(args.data)
    except DataDirInUse as e:
        raise CliError(f"{e}: stop it before restoring") from None
    try:
        result = restore_snapshot(os.path.abspath(args.snapshot),
                                  os.path.join(args.data, META_FILE))
    except SnapshotError as e:
        raise CliError(str(e)) from None
    finally:
        os.close(lock)
    text = (f"Restored node {result['node_id']}'s metadata into {args.data}.\n"
            + _snapshot_needs(result))
    if not os.path.isdir(os.path.join(args.data, "chunks")):
        text += (f"\nWARNING: {args.data} has no chunks/ directory yet: copy the node's "
                 "chunk files there before starting it, or every object stored in "
                 "chunks is unreadable.")
    return result, text


def _snapshot_needs(result):
    """What else a node started from the snapshot needs."""
    if result["encryption_key_id"] is None:
        return "The metadata is not encrypted: no node key is needed to restore it."
    return (f"The metadata is encrypted: a node restored from it needs node key "
            f"{result['encryption_key_id']} in Z4_ENCRYPTION_KEY (the key at the time "
            "of the snapshot).")


def parser():
    top = argparse.ArgumentParser(prog="z4", description="Administer a z4node.")
    top.add_argument("--data", default=os.environ.get("Z4_DATA", "./data"),
                     help="the node's data dir (default ./data)")
    top.add_argument("--json", action="store_true", help="print JSON")
    # --json is accepted after the command too (`z4 key create NAME --json`,
    # as documented); SUPPRESS keeps a subcommand that was not given it
    # from resetting the value set before the command.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON")
    families = top.add_subparsers(dest="family", required=True)

    keys = families.add_parser("key", help="access keys").add_subparsers(
        dest="action", required=True)
    p = keys.add_parser("create", help="create a key (its own account)",
                        parents=[common])
    p.add_argument("name")
    p.set_defaults(run=key_create)
    keys.add_parser("list", help="list keys", parents=[common]).set_defaults(run=key_list)
    p = keys.add_parser("info", help="a key and what it may do", parents=[common])
    p.add_argument("name")
    p.add_argument("--show-secret", action="store_true")
    p.set_defaults(run=key_info)
    p = keys.add_parser("delete", help="delete a key", parents=[common])
    p.add_argument("name")
    p.set_defaults(run=key_delete)

    kms = families.add_parser("kms", help="SSE-KMS keys").add_subparsers(
        dest="object", required=True)
    kms.add_parser("rewrap", help="after a KMS master key rotation, wrap every KMS key "
                                  "under the current master key",
                   parents=[common]).set_defaults(run=kms_rewrap)
    kms_keys = kms.add_parser("key", help="KMS keys").add_subparsers(
        dest="action", required=True)
    p = kms_keys.add_parser("create", help="create a KMS key (wrapped by the KMS "
                                           "master key)", parents=[common])
    p.add_argument("name")
    p.set_defaults(run=kms_key_create)
    kms_keys.add_parser("list", help="list KMS keys",
                        parents=[common]).set_defaults(run=kms_key_list)
    p = kms_keys.add_parser("info", help="a KMS key (by name, alias/NAME, id or ARN)",
                            parents=[common])
    p.add_argument("name")
    p.set_defaults(run=kms_key_info)

    buckets = families.add_parser("bucket", help="buckets and grants").add_subparsers(
        dest="action", required=True)
    p = buckets.add_parser("create", help="create a bucket", parents=[common])
    p.add_argument("name")
    p.add_argument("--owner", help="owning key name (default: admin)")
    p.set_defaults(run=bucket_create)
    buckets.add_parser("list", help="list buckets",
                       parents=[common]).set_defaults(run=bucket_list)
    for action, run, text in (("allow", bucket_allow, "grant a key rights on a bucket"),
                              ("deny", bucket_deny, "take rights away (all if none named)")):
        p = buckets.add_parser(action, help=text, parents=[common])
        p.add_argument("bucket")
        p.add_argument("--key", required=True, help="key name")
        p.add_argument("--read", action="store_true", help="GET, HEAD, listings")
        p.add_argument("--write", action="store_true", help="PUT, DELETE, multipart")
        p.add_argument("--owner", action="store_true", help="everything, bucket settings too")
        p.set_defaults(run=run)
    encryption = families.add_parser(
        "encryption", help="encryption at rest").add_subparsers(dest="action", required=True)
    encryption.add_parser("status", help="whether the data dir is encrypted, and "
                                         "any rotation's progress", parents=[common]) \
        .set_defaults(run=encryption_status)
    p = encryption.add_parser(
        "rotate", help="rewrap every data key under a new node key (resumes an "
                       "interrupted rotation)", parents=[common])
    p.add_argument("--new-key-file", metavar="PATH",
                   help=f"file holding the new key (- for stdin; default ${NEW_KEY_ENV}, "
                        "else a prompt)")
    p.add_argument("--no-wait", action="store_true",
                   help="start it and return; the node carries on")
    p.add_argument("--max-rate", type=float, metavar="KEYS_PER_SECOND",
                   help="rewrap at most this many data keys a second (default: "
                        "as fast as the node's metadata writer allows)")
    p.set_defaults(run=encryption_rotate)
    gc = families.add_parser(
        "gc", help="garbage collection of unused chunks and old tombstones").add_subparsers(
        dest="action", required=True)
    for action, text in (("status", "what garbage collection deleted so far"),
                         ("run", "a pass now, sweeping the chunk files")):
        p = gc.add_parser(action, help=text, parents=[common])
        p.set_defaults(run=gc_command, command=f"gc.{action}")
    scrub = families.add_parser(
        "scrub", help="checking every chunk file against its hash").add_subparsers(
        dest="action", required=True)
    for action, text in (("status", "progress, rate and what was found"),
                         ("start", "resume, and begin a pass now if none is under way"),
                         ("pause", "stop reading chunk files until started again")):
        p = scrub.add_parser(action, help=text, parents=[common])
        p.set_defaults(run=scrub_command, command=f"scrub.{action}")
        if action == "status":
            p.add_argument("--watch", action="store_true",
                           help="follow the running pass with a progress bar until it ends")
    p = families.add_parser(
        "backup", help="write a consistent snapshot of the running node's metadata",
        parents=[common])
    p.add_argument("path", help="the snapshot file to create (a new file, where the "
                                "node's user may write)")
    p.set_defaults(run=backup)
    p = families.add_parser(
        "restore", help="put a metadata snapshot in place in --data (no node running, "
                        "no metadata there yet)", parents=[common])
    p.add_argument("snapshot", help="a file written by `z4 backup`")
    p.set_defaults(run=restore)
    cluster = add_cluster_commands(families, common)
    p = cluster.add_parser(
        "drain", help="move this node's data to the others, so that it can be removed",
        parents=[common])
    p.add_argument("--watch", action="store_true",
                   help="follow the move until the node holds no last copy of anything")
    p.set_defaults(run=drain_command)
    cluster.add_parser(
        "repair", help="compare this node's object versions with the other owners' now "
                       "(anti-entropy) and repair what differs", parents=[common]) \
        .set_defaults(run=repair_command)
    return top


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        result, text = args.run(args)
    except (CliError, ClusterCliError) as e:
        print(f"z4: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C stops watching; the node carries on with what it was doing.
        print("z4: interrupted (the node carries on)", file=sys.stderr)
        return 130
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
