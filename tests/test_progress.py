"""bsr_cli.progress: quiet for short runs, then log lines with ETA off a terminal; nothing when disabled."""
import io

from bsr_cli.progress import Progress, eta_seconds, format_duration


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_format_duration_and_eta():
    assert format_duration(75.2) == "1m15s"
    assert format_duration(3725) == "1h02m05s"
    assert format_duration(-3) == "0m00s"
    assert eta_seconds(3, 12, 30.0) == 90.0   # 10 s per item, 9 left
    assert eta_seconds(0, 12, 30.0) is None
    assert eta_seconds(3, None, 30.0) is None


def test_log_lines_only_after_the_interval_with_eta():
    clock, out = Clock(), io.StringIO()
    with Progress("bsr eval", every=10, stream=out, clock=clock, terminal=False) as bar:
        task = bar.add("ebsr-light Set14 x4", total=14)
        clock.t += 4
        bar.update(task, 2)                       # 4 s in: a short run prints nothing
        assert out.getvalue() == ""
        clock.t += 8
        bar.update(task, 6)                       # 12 s in, 6/14 done: 2 s per image, 8 left
        clock.t += 1
        bar.update(task, 7)                       # within 10 s of the last line: silent
    assert out.getvalue() == "bsr eval: ebsr-light Set14 x4 6/14 (43 %), 0m12s elapsed, ETA 0m16s\n"


def test_sub_task_and_fractional_overall():
    clock, out = Clock(), io.StringIO()
    with Progress("bsr upscale", every=5, stream=out, clock=clock, terminal=False) as bar:
        images = bar.add("images", total=4)
        tiles = bar.add("tiles", total=1, visible=False)
        bar.update(tiles, 0, total=8, label="baby.png", visible=True)
        clock.t += 20
        bar.update(tiles, 4)
        bar.update(images, 1.5)                   # 1 image + half of the next: 20 s for 1.5 -> 33 s for 2.5
    assert out.getvalue() == ("bsr upscale: images 1/4 (38 %) (baby.png 4/8), 0m20s elapsed, ETA 0m33s\n")


def test_disabled_prints_nothing():
    clock, out = Clock(), io.StringIO()
    with Progress("bsr upscale", enabled=False, every=0, stream=out, clock=clock, terminal=False) as bar:
        task = bar.add("images", total=2)
        clock.t += 60
        bar.update(task, 1)
    assert out.getvalue() == ""
