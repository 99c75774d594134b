"""`kerasvid.progress.Progress`, the one reporter of convert / conjugates, extract and training: which updates give
a log line (every 10%, every n units, every update), the rate and ETA against a fake clock, the terminal bar, and
counting from several threads."""
import io
import threading

import pytest

from kerasvid import progress
from kerasvid.data import convert


class Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    """time.time() as seen by the reporter: starts at 100 s, moved by hand."""
    now = [100.0]
    monkeypatch.setattr(progress.time, "time", lambda: now[0])
    return now


def test_log_lines_every_tenth_with_rate_and_eta(clock):
    out = io.StringIO()
    bar = progress.Progress(20, "convert train", unit="videos", log_lines=10, log_first=True, stream=out)
    for _ in range(20):
        clock[0] += 2.0  # 0.5 videos/s
        bar.update()
    lines = out.getvalue().splitlines()
    # The first video, then 2/20, 4/20, ..., 20/20 (each a new tenth).
    assert [line.split(":")[1].split(",")[0].strip() for line in lines] == [
        "1/20 videos"] + [f"{k}/20 videos" for k in range(2, 21, 2)]
    assert lines[0] == "convert train: 1/20 videos, 0.50 videos/s, ETA 38 s"
    assert lines[-1] == "convert train: 20/20 videos, 0.50 videos/s, ETA 0 s"


def test_convert_progress_keeps_its_signature_and_lines(clock):
    out = io.StringIO()
    bar = convert.Progress(3, "conjugates", stream=out)  # what kerasvid/data/conjugates.py calls
    clock[0] += 1.0
    bar.update(3)
    assert out.getvalue() == "conjugates: 3/3 videos, 3.00 videos/s, ETA 0 s\n"
    quiet = io.StringIO()
    silent = convert.Progress(3, "x", stream=quiet, enabled=False)
    silent.update(2)
    assert silent.done == 2 and quiet.getvalue() == ""


def test_log_every_counts_from_a_resumed_step_and_passes_multiples(clock):
    lines = []
    bar = progress.Progress(100, "step", unit="steps", initial=40, log_every=25,
                            line="{desc} {done}/{total} {text} ({rate:.2f} {unit}/s, ETA {eta})", log=lines.append)
    clock[0] += 5.0
    bar.update_to(45, "loss=1")  # same multiple (40 // 25 == 45 // 25): no line
    clock[0] += 5.0
    bar.update_to(60, "loss=0.5")  # passes 50 without landing on it
    clock[0] += 10.0
    bar.update_to(100, "loss=0.25")
    # 20 steps in 10 s since the resume at 40 -> 2 steps/s, 40 left -> 20 s; then 60 steps in 20 s at the end.
    assert lines == ["step 60/100 loss=0.5 (2.00 steps/s, ETA 20 s)", "step 100/100 loss=0.25 (3.00 steps/s, ETA 0 s)"]


def test_unknown_eta_and_one_line_per_update_without_throttling(clock):
    out = io.StringIO()
    bar = progress.Progress(2, "kerasvid extract", line="[{done}/{total}] {text} ETA {eta}", stream=out)
    bar.update(0, "nothing done yet")
    bar.update(text="a")
    assert out.getvalue().splitlines() == ["[0/2] nothing done yet ETA ?", "[1/2] a ETA 0 s"]
    with pytest.raises(ValueError, match="not both"):
        progress.Progress(2, log_every=1, log_lines=2)


def test_terminal_bar_is_redrawn_in_place_and_covers_a_longer_previous_one(clock):
    tty = Terminal()
    bar = progress.Progress(4, "job", unit="videos", stream=tty)
    clock[0] += 1.0
    bar.update(text="a-very-long-video-name")
    first = tty.getvalue()
    assert first == "\r[#######.......................] job 1/4 a-very-long-video-name 1.00 videos/s, ETA 3 s"
    bar.update(text="b")
    second = tty.getvalue()[len(first):]
    assert second.startswith("\r[###############...............] job 2/4 b 2.00 videos/s, ETA 1 s")
    assert len(second) == len(first)  # padded with spaces over the longer first bar
    bar.update(2)
    assert tty.getvalue().endswith("\n") and tty.getvalue().count("\n") == 1 and "4/4" in tty.getvalue()


def test_threads_share_one_reporter():
    out = io.StringIO()
    bar = progress.Progress(4000, "convert", unit="videos", log_lines=10, stream=out)
    threads = [threading.Thread(target=lambda: [bar.update() for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bar.done == 4000
    assert [line.split(": ")[1].split(" ")[0] for line in out.getvalue().splitlines()] == [
        f"{k}/4000" for k in range(400, 4001, 400)]
