"""The progress bar of the command line (``bench``, ``demo``, ``compress``):
one line on stderr, redrawn with carriage returns, drawn only when the
stream is a terminal (a log file would get every redraw)."""

import shutil
import sys


class ProgressBar:
    """``update(done, total, before, after)`` redraws the line as
    ``before [#####.....] after``, fitted to the terminal's width;
    ``newline()`` keeps the line and starts the next one; ``close()``
    keeps the last line (``keep=True``) or clears it."""

    def __init__(self, enabled=True, *, stream=None, width=30, keep=False):
        self.stream = sys.stderr if stream is None else stream
        self.width, self.keep = width, keep
        self.active = enabled and self.stream.isatty()
        self.drawn = False
        self.columns = shutil.get_terminal_size().columns - 1

    def update(self, done, total, before="", after=""):
        if not self.active:
            return
        filled = int(self.width * min(done, total) / total) if total else self.width
        bar = "[" + "#" * filled + "." * (self.width - filled) + "]"
        line = " ".join(part for part in (before, bar, after) if part)
        self.stream.write(f"\r{line[: self.columns]:<{self.columns}}")
        self.stream.flush()
        self.drawn = True

    def newline(self):
        if self.active and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def close(self):
        if self.keep:
            self.newline()
        elif self.active and self.drawn:
            self.stream.write("\r" + " " * self.columns + "\r")
            self.stream.flush()
            self.drawn = False
