"""How the ``z4`` command shows things to a person: aligned tables, and
progress bars for anything that runs longer than a second.

Owns: the one table helper every ``z4`` command uses, and
:class:`ProgressDisplay`, a ``rich`` bar with rate and ETA when standard
output is a terminal, plain lines (one per tenth done) when it is a file,
a pipe or a test. JSON output (``--json``) draws neither.
"""

import sys

from rich.console import Console
from rich.filesize import decimal
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn,
                           TaskProgressColumn, TextColumn, TimeRemainingColumn)
from rich.text import Text


def table(headers, rows):
    """Left-aligned columns separated by two spaces; None shows as "-"."""
    cells = [list(map(str, headers))] + [[("-" if c is None else str(c)) for c in r]
                                         for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in cells)


def size(count):
    """A byte count for people: 1.2 MB (powers of 1000, as disks are sold)."""
    return decimal(count)


class RateColumn(ProgressColumn):
    """Units a second (rich's own speed column counts bytes only)."""

    def __init__(self, unit):
        ProgressColumn.__init__(self)
        self.unit = unit

    def render(self, task):
        if task.speed is None:
            return Text(f"? {self.unit}/s", style="progress.data.speed")
        return Text(f"{task.speed:,.0f} {self.unit}/s", style="progress.data.speed")


class ProgressDisplay:
    """Progress of one long operation, counted in ``unit`` (``total`` of
    them, or None when unknown: an indeterminate bar).

    ``console`` decides the form: a rich bar if it is a terminal, else a
    plain line to it at each tenth done (each ``plain_every`` updates when
    the total is unknown). ``clock`` gives seconds for the rate and ETA.
    """

    # Without a total, a plain line every this many updates: once every few
    # seconds at the polling intervals the commands use.
    plain_every = 10

    def __init__(self, description, total, unit, console=None, clock=None):
        self.console = Console(file=sys.stdout) if console is None else console
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0
        self._updates = 0
        self._shown = None
        self._printed = None
        self._bar = None
        if self.console.is_terminal:
            extra = {} if clock is None else {"get_time": clock}
            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                MofNCompleteColumn(), RateColumn(unit), TextColumn("ETA"),
                TimeRemainingColumn(), console=self.console, auto_refresh=False,
                transient=False, **extra)
            self._task = self._bar.add_task(description, total=total)
            self._bar.start()

    def update(self, completed, total=None, description=None):
        """``completed`` units are done (of ``total``, if it changed)."""
        self.completed = completed
        if total is not None:
            self.total = total
        if description is not None:
            self.description = description
        self._updates += 1
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, total=self.total,
                             description=self.description)
            self._bar.refresh()
            return
        if self.total:
            mark = min(10 * completed // self.total, 10)
        else:
            mark = self._updates // self.plain_every
        if mark != self._shown:
            self._shown = mark
            self._line()

    def finish(self, description=None):
        """Show the last state, and stop."""
        if description is not None:
            self.description = description
        if self._bar is not None:
            self._bar.update(self._task, description=self.description)
            self._bar.refresh()
        else:
            self._line()
        self.close()

    def close(self):
        """Stop redrawing and give the terminal its cursor back (also after
        an error or Ctrl-C: use the display as a context manager)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _line(self):
        done = f"{self.completed:,}" + (f"/{self.total:,}" if self.total else "")
        percent = (f" ({min(100 * self.completed // self.total, 100)}%)"
                   if self.total else "")
        line = f"{self.description}: {done} {self.unit}{percent}"
        if line != self._printed:  # finish() after a tenth's line repeats nothing
            self._printed = line
            self.console.print(line, highlight=False, soft_wrap=True)
