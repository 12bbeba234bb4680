"""The console's HTML: one function per page, each returning the page as
text. Every value that came from a user, a key or a peer goes through
:func:`esc`; the pages load only the node's own ``console.css`` and
``console.js`` (the console's Content-Security-Policy allows nothing else,
inline scripts included).

Owns the look of the console only: what a page shows is decided by
:mod:`z4node.web.console`, which passes plain values in.
"""

import html
import time
from urllib.parse import quote, urlencode

from z4node.web.console_sessions import CSRF_FIELD

BASE = "/_z4/console"


def esc(value):
    return html.escape(str(value), quote=True)


def url(path, **query):
    """A console URL: ``path`` under :data:`BASE`, the query without the
    parameters that are None."""
    query = {k: v for k, v in query.items() if v is not None}
    return BASE + path + ("?" + urlencode(query) if query else "")


def when(seconds):
    if seconds is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def size(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def table(headings, rows, cls=""):
    """``rows``: lists of cells already HTML, or (attributes HTML, cells)."""
    out = [f'<table class="{esc(cls)}"><thead><tr>']
    out += [f"<th>{esc(h)}</th>" for h in headings]
    out.append("</tr></thead><tbody>")
    for row in rows:
        attributes, cells = row if isinstance(row, tuple) else ("", row)
        out.append(f"<tr{attributes}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if not rows:
        out.append(f'<tr><td colspan="{len(headings)}" class="empty">none</td></tr>')
    out.append("</tbody></table>")
    return "".join(out)


def post_form(action, csrf, fields, button, cls="inline", confirm=None):
    """A POST form carrying the session's CSRF token. ``fields``: HTML."""
    confirm_attribute = f' data-confirm="{esc(confirm)}"' if confirm else ""
    return (f'<form method="post" action="{esc(action)}" class="{esc(cls)}"{confirm_attribute}>'
            f'<input type="hidden" name="{CSRF_FIELD}" value="{esc(csrf)}">{fields}'
            f'<button type="submit">{esc(button)}</button></form>')


def hidden(name, value):
    return f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'


def nested(value):
    """A JSON-like value (the status views) as nested HTML tables."""
    if isinstance(value, dict):
        if not value:
            return '<span class="empty">none</span>'
        rows = "".join(f"<tr><th>{esc(k)}</th><td>{nested(v)}</td></tr>"
                       for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
        return f'<table class="kv">{rows}</table>'
    if isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in value):
            return esc(", ".join(str(v) for v in value))
        return "".join(nested(v) for v in value)
    if value is None:
        return '<span class="empty">-</span>'
    return esc(value)


def page(title, body, who=None, refresh_seconds=None):
    """The whole document. ``who`` (key name, is admin, CSRF token) adds
    the navigation and the logout button."""
    head = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(title)} - z4node console</title>",
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f'<link rel="stylesheet" href="{BASE}/static/console.css">',
            f'<script src="{BASE}/static/console.js" defer></script>']
    if refresh_seconds:
        head.append(f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">')
    nav = ""
    if who is not None:
        name, is_admin, csrf = who
        links = ([("cluster", "Cluster")] if is_admin else []) + [
            ("buckets", "Buckets"), ("keys", "Keys" if is_admin else "My key")]
        nav = ('<nav><span class="brand">z4node</span>'
               + "".join(f'<a href="{BASE}/{p}" id="nav-{p}">{esc(t)}</a>' for p, t in links)
               + f'<span class="who">key <b id="who">{esc(name)}</b>'
               + (" (admin)" if is_admin else "") + "</span>"
               + post_form(f"{BASE}/logout", csrf, "", "Log out", cls="inline logout")
               + "</nav>")
    return ("".join(head) + f'</head><body>{nav}<main><h1>{esc(title)}</h1>{body}'
            "</main></body></html>")


def login_page(csrf, message=None):
    note = f'<p class="error" id="login-error">{esc(message)}</p>' if message else ""
    body = (f'{note}<form method="post" action="{BASE}/login" id="login" class="stacked">'
            f'{hidden(CSRF_FIELD, csrf)}'
            '<label>Access key id <input name="access_key" id="access-key" '
            'autocomplete="username" required></label>'
            '<label>Secret key <input name="secret" id="secret" type="password" '
            'autocomplete="current-password" required></label>'
            '<button type="submit" id="login-button">Log in</button></form>'
            '<p class="hint">Any access key of this cluster can log in; it sees and '
            "does what its S3 permissions allow.</p>")
    return page("Log in", body)


def error_page(status, code, message, who=None):
    body = (f'<p class="error"><span id="error-code">{esc(code)}</span> '
            f'(HTTP {int(status)})</p><p class="error-message">{esc(message)}</p>'
            f'<p><a href="{BASE}/">Back to the console</a></p>')
    return page("Something went wrong", body, who)


def cluster_page(who, peers, ring, status, refresh_seconds):
    shares = ring.get("primary_share", {})
    rows = []
    for m in sorted(peers["members"], key=lambda m: m["id"]):
        share = shares.get(m["id"])
        rows.append((f' id="member-{esc(m["id"])}" data-state="{esc(m["state"])}"', [
            esc(m["id"]) + (" (this node)" if m.get("self") else ""),
            f'<span class="state state-{esc(m["state"])}">{esc(m["state"])}</span>',
            esc(m.get("zone") or ""), esc(m.get("capacity")),
            esc(":".join(str(p) for p in m.get("s3") or ())),
            "" if share is None else f"{share * 100:.1f} %",
            esc(m.get("incarnation")),
            "" if m.get("last_heard_ago") is None else f'{m["last_heard_ago"]:.1f} s ago']))
    body = (f'<p class="hint">Seen from node <b>{esc(peers["id"])}</b>; this page '
            f"reloads every {int(refresh_seconds)} s.</p>"
            "<h2>Members</h2>"
            + table(["Member", "SWIM state", "Zone", "Capacity", "S3 address",
                     "Ring share", "Incarnation", "Last heard"], rows, "members")
            + "<h2>Ring</h2>"
            + nested({k: v for k, v in ring.items() if k != "primary_share"})
            + "<h2>Node status</h2>"
            "<p class=\"hint\">What <code>/_z4/status</code> reports: membership, "
            "replication of the system tables, background jobs (scrub, GC, "
            "lifecycle), the DHT and its provider records.</p>"
            + nested(status))
    return page("Cluster", body, who, refresh_seconds)


def buckets_page(who, buckets):
    rows = [[f'<a href="{esc(url("/buckets/" + quote(b["name"], safe="")))}" '
             f'class="bucket">{esc(b["name"])}</a>',
             esc(b["owner"]), esc(when(b["created"]))] for b in buckets]
    return page("Buckets", table(["Bucket", "Owner", "Created"], rows, "buckets"), who)


def _crumbs(bucket, prefix):
    parts = [f'<a href="{esc(url("/buckets/" + quote(bucket, safe="")))}">{esc(bucket)}</a>']
    so_far = ""
    for part in prefix.split("/")[:-1]:
        so_far += part + "/"
        parts.append(f'<a href="{esc(url("/buckets/" + quote(bucket, safe=""), prefix=so_far))}">'
                     f"{esc(part)}</a>")
    return '<p class="crumbs">' + " / ".join(parts) + " /</p>"


def browser_page(who, bucket, prefix, items, next_after):
    """One page of a bucket's listing at ``prefix``: ``items`` are common
    prefixes (str) and objects (with key, size, last_modified, etag)."""
    csrf = who[2]
    base = "/buckets/" + quote(bucket, safe="")
    object_url = "/object/" + quote(bucket, safe="")
    rows = []
    for item in items:
        if isinstance(item, str):
            rows.append([f'<a href="{esc(url(base, prefix=item))}" class="prefix">'
                         f"{esc(item[len(prefix):])}</a>", "", "", ""])
            continue
        name = item.key[len(prefix):]
        actions = (f'<a href="{esc(url(object_url, key=item.key))}" class="download">download</a> '
                   f'<a href="{esc(url("/versions/" + quote(bucket, safe=""), key=item.key))}">'
                   "versions</a> "
                   + post_form(url("/delete/" + quote(bucket, safe="")), csrf,
                               hidden("key", item.key), "delete",
                               confirm=f"Delete {item.key}?"))
        rows.append((f' data-key="{esc(item.key)}"',
                     [f'<span class="key">{esc(name)}</span>', esc(size(item.size)),
                      esc(when(item.last_modified)), actions]))
    more = ""
    if next_after is not None:
        more = (f'<p><a href="{esc(url(base, prefix=prefix or None, after=next_after))}" '
                'id="next-page">Next page</a></p>')
    upload = (f'<form id="upload" class="upload" data-action="{esc(url(object_url))}" '
              f'data-prefix="{esc(prefix)}" data-csrf="{esc(csrf)}">'
              '<label>Upload to this folder <input type="file" id="upload-file" multiple>'
              '</label><button type="submit" id="upload-button">Upload</button>'
              '<progress id="upload-progress" max="1" value="0"></progress>'
              '<span id="upload-status"></span></form>')
    body = (_crumbs(bucket, prefix) + upload
            + table(["Name", "Size", "Last modified", ""], rows, "objects") + more)
    return page(f"Bucket {bucket}", body, who)


def versions_page(who, bucket, key, versions, more_url):
    rows = []
    object_url = "/object/" + quote(bucket, safe="")
    for version, is_latest in versions:
        vid = version.version_id
        if version.delete_marker:
            actions = ""
        else:
            actions = f'<a href="{esc(url(object_url, key=key, version=vid))}">download</a> '
        actions += post_form(url("/delete/" + quote(bucket, safe="")), who[2],
                             hidden("key", key) + hidden("version", vid),
                             "delete version", confirm=f"Delete version {vid} for good?")
        rows.append([esc(vid), "yes" if is_latest else "",
                     "delete marker" if version.delete_marker else esc(size(version.size)),
                     esc(when(version.last_modified)), actions])
    body = (_crumbs(bucket, key.rpartition("/")[0] + "/" if "/" in key else "")
            + f'<p>Versions of <b class="key">{esc(key)}</b>, newest first.</p>'
            + table(["Version id", "Latest", "Size", "Last modified", ""], rows, "versions")
            + (f'<p><a href="{esc(more_url)}">More versions</a></p>' if more_url else ""))
    return page("Versions", body, who)


def _grants_text(grants):
    return ", ".join(f"{g.bucket}: " + ("owner" if g.can_own else "+".join(
        w for w, on in (("read", g.can_read), ("write", g.can_write)) if on))
        for g in sorted(grants, key=lambda g: g.bucket)) or "none"


def keys_page(who, keys, grants_of, bucket_names, created=None):
    """The admin's view: every key with its grants, and the forms that
    manage them. ``created``: (name, access key id, secret) of a key just
    made, shown this once."""
    csrf = who[2]
    shown = ""
    if created is not None:
        shown = ('<div class="created" id="created-key"><p>Key <b>' + esc(created[0])
                 + "</b> created. Its secret is shown this once:</p>"
                 + table(["Access key id", "Secret key"],
                         [[f'<code id="created-id">{esc(created[1])}</code>',
                           f'<code id="created-secret">{esc(created[2])}</code>']]) + "</div>")
    rows = []
    for key in keys:
        delete = "" if key.name == who[0] else post_form(
            url("/keys/delete"), csrf, hidden("name", key.name), "delete",
            confirm=f"Delete key {key.name}? Clients using it stop working.")
        rows.append((f' data-key-name="{esc(key.name)}"', [
            esc(key.name), f"<code>{esc(key.access_key_id)}</code>",
            "yes" if key.is_admin else "", esc(when(key.created)),
            esc(_grants_text(grants_of(key))), delete]))
    options = "".join(f'<option value="{esc(b)}">{esc(b)}</option>' for b in bucket_names)
    key_options = "".join(f'<option value="{esc(k.name)}">{esc(k.name)}</option>'
                          for k in keys if not k.is_admin)
    create = post_form(url("/keys/create"), csrf,
                       '<label>New key named <input name="name" id="new-key-name" required>'
                       "</label>", "Create key", cls="stacked")
    grant = post_form(
        url("/grants"), csrf,
        f'<label>Key <select name="key">{key_options}</select></label>'
        f'<label>Bucket <select name="bucket">{options}</select></label>'
        '<label><input type="checkbox" name="read" value="1"> read</label>'
        '<label><input type="checkbox" name="write" value="1"> write</label>'
        '<label><input type="checkbox" name="owner" value="1"> owner</label>'
        '<label>Change <select name="change"><option value="allow">allow</option>'
        '<option value="deny">take away</option></select></label>',
        "Set grant", cls="stacked")
    body = (shown + table(["Name", "Access key id", "Admin", "Created", "Grants", ""],
                          rows, "keys")
            + "<h2>Create a key</h2>" + create + "<h2>Grants</h2>" + grant)
    return page("Keys", body, who)


def own_key_page(who, info):
    """A key's view of itself (``z4 key info``'s answer, without the secret)."""
    grants = [[esc(g["bucket"]), "yes" if g["read"] else "", "yes" if g["write"] else "",
               "yes" if g["owner"] else ""] for g in info["grants"]]
    may = [[esc(m["bucket"]), esc(", ".join(m["always"])), esc(", ".join(m["sometimes"]))]
           for m in info["may"]]
    body = (f'<p>Access key id <code>{esc(info["access_key_id"])}</code>; '
            f"may {esc(info['can_do'])}.</p><h2>Grants</h2>"
            + table(["Bucket", "Read", "Write", "Owner"], grants)
            + "<h2>What this key may do</h2>"
            + table(["Bucket", "Always", "Depending on the request"], may))
    return page("My key", body, who)
