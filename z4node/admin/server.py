"""The node's admin socket: a UNIX socket in the data dir (mode 0600, so
only the node's user can reach it) speaking one JSON object per line:
``{"command": "key.create", "args": {...}}`` answered by
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``."""

import json
import os

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from z4node.admin.commands import AdminCommands
from z4node.objects.system import AdminError

# The socket's file name inside the data dir.
ADMIN_SOCKET = "admin.sock"
# sun_path holds 108 bytes on Linux; longer paths are reached through an
# open descriptor of the data dir instead.
_MAX_SOCKET_PATH = 100


class SocketPath:
    """The admin socket's path, short enough to bind or connect to.

    For a long data dir path the directory is opened and the socket named
    as ``/proc/self/fd/N/admin.sock``; :meth:`close` releases it.
    """

    def __init__(self, data_dir):
        self.real = os.path.join(data_dir, ADMIN_SOCKET)
        self._fd = None
        if len(self.real.encode()) <= _MAX_SOCKET_PATH:
            self.usable = self.real
        else:
            self._fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
            self.usable = f"/proc/self/fd/{self._fd}/{ADMIN_SOCKET}"

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class AdminProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = 1024 * 1024
    log = Logger()

    def lineReceived(self, line):
        try:
            request = json.loads(line)
            command = request["command"]
            args = request.get("args", {})
            if not isinstance(command, str) or not isinstance(args, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self._reply({"ok": False, "error": "malformed request"})
            return
        d = Deferred.fromCoroutine(self.factory.commands.run(command, args))
        d.addCallbacks(lambda result: self._reply({"ok": True, "result": result}),
                       self._failed, errbackArgs=(command,))

    def _failed(self, failure, command):
        if failure.check(AdminError):
            self._reply({"ok": False, "error": str(failure.value)})
        else:
            self.log.failure("admin command {command} failed", failure, command=command)
            self._reply({"ok": False, "error": "internal error; see the node's log"})

    def _reply(self, document):
        self.sendLine(json.dumps(document).encode("utf-8"))


class AdminFactory(Factory):
    protocol = AdminProtocol

    def __init__(self, node):
        self.commands = AdminCommands(node)
