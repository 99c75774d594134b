"""Console progress of long jobs: one reporter for `kerasvid convert` / `conjugates` (videos), `kerasvid extract`
(videos, one line each) and the training loop (steps).

On an interactive terminal: one bar redrawn in place (`\\r`), ended by a newline when the job is done. Anywhere else
(a log file, CI): whole lines, throttled so that a long job does not flood its log. Both show the count, the rate
since the reporter started and the time left at that rate.

Imports only the standard library: `kerasvid convert --help` must not wait for TensorFlow.
"""
import sys
import threading
import time

# The line of a log (non-terminal) update; fields: desc, done, total, unit, text, rate (units per second, float),
# eta (the time left in words: "12 s", or "?" before any unit is done).
DEFAULT_LINE = "{desc}: {done}/{total} {unit}, {rate:.2f} {unit}/s, ETA {eta}"
_BAR_WIDTH = 30
_BAR_TEXT_WIDTH = 40  # the bar shows at most this much of an update's text


class Progress:
    """Counts the units of a job and reports them: a bar on a terminal, log lines otherwise.

    Thread-safe: the workers of a pool may share one reporter.

    Args:
        total: units in the whole job.
        desc: what runs; starts each line (e.g. "convert train").
        unit: what is counted, plural ("videos", "steps"); the rate is in `unit`/s.
        initial: units already done when the reporter starts (a resumed run); the rate and the ETA count only the
            units done since.
        log_every: without a terminal, a line each time the count reaches or passes a multiple of this.
        log_lines: instead of `log_every`, a line each time the count reaches or passes another 1/log_lines of
            `total` (10: a line every 10%). Either way a line at the end; with neither, a line per update.
        log_first: also a line at the first update (an early rate).
        line: the log line's format (`DEFAULT_LINE` and its fields).
        log: where log lines go, a function of one string (default: written to `stream`, one per line).
        stream: the output (default stderr); the bar is drawn only when it is a terminal (`isatty()`).
        enabled: False: count only, report nothing.

    Example:
        bar = Progress(len(videos), "convert train", unit="videos", log_lines=10)
        for video in videos:
            ...
            bar.update()  # or bar.update(text=name), shown by formats with {text}
    """

    def __init__(self, total, desc="", unit="items", initial=0, log_every=None, log_lines=None, log_first=False,
                 line=DEFAULT_LINE, log=None, stream=None, enabled=True):
        if log_every is not None and log_lines is not None:
            raise ValueError(f"Give `log_every` or `log_lines`, not both (got {log_every} and {log_lines}).")
        self.total, self.desc, self.unit, self.line_format = int(total), desc, unit, line
        self.done = self._start_done = int(initial)
        self.log_every = None if log_every is None else max(1, int(log_every))
        self.log_lines = None if log_lines is None else max(1, int(log_lines))
        self.log_first = log_first
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._log = log or (lambda text: self.stream.write(text + "\n"))
        self._lock = threading.Lock()
        self._start = time.time()
        self._bucket = self._bucket_of(self.done)
        self._updates = 0
        self._bar_length = 0

    def _bucket_of(self, done):
        """Log lines are written when this changes."""
        if self.log_lines is not None:
            return self.log_lines * done // max(self.total, 1)
        if self.log_every is not None:
            return done // self.log_every
        return None  # not throttled: a line per update

    def rate_and_eta(self):
        """(units per second since the start, seconds left at that rate or None when unknown)."""
        rate = (self.done - self._start_done) / max(time.time() - self._start, 1e-9)
        return rate, ((self.total - self.done) / rate if rate > 0 else None)

    def _rate_and_eta_words(self):
        rate, eta = self.rate_and_eta()
        return rate, "?" if eta is None else f"{eta:.0f} s"

    def format_line(self, text=""):
        rate, eta = self._rate_and_eta_words()
        return self.line_format.format(desc=self.desc, done=self.done, total=self.total, unit=self.unit, text=text,
                                       rate=rate, eta=eta)

    def update(self, n=1, text=""):
        """`n` more units done; `text` describes the last one (for formats with `{text}` and the bar)."""
        with self._lock:
            self._report(self.done + n, text)

    def update_to(self, done, text=""):
        """`done` units done in all (e.g. the step a training loop reached)."""
        with self._lock:
            self._report(int(done), text)

    def _report(self, done, text):
        self.done = done
        self._updates += 1
        if not self.enabled:
            return
        finished = self.done >= self.total
        if self.tty:
            filled = int(_BAR_WIDTH * min(self.done, self.total) / max(self.total, 1))
            rate, eta = self._rate_and_eta_words()
            shown = f" {text[:_BAR_TEXT_WIDTH]}" if text else ""
            bar = (f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {self.desc} {self.done}/{self.total}{shown} "
                   f"{rate:.2f} {self.unit}/s, ETA {eta}")
            # Spaces cover the rest of a longer previous bar.
            self.stream.write("\r" + bar + " " * max(0, self._bar_length - len(bar)))
            self._bar_length = len(bar)
            if finished:
                self.stream.write("\n")
        else:
            bucket = self._bucket_of(self.done)
            if bucket is None or bucket != self._bucket or finished or (self.log_first and self._updates == 1):
                self._bucket = bucket
                self._log(self.format_line(text))
        self.stream.flush()
