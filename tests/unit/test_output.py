"""Host-prefixed output keeps whole lines together, whatever chunks Fabric hands over."""

from __future__ import annotations

import io
import threading

from ssmfab.output import PrefixedStream, Progress, table, transfer_meter


def test_lines_are_prefixed_and_partial_lines_held_back() -> None:
    sink = io.StringIO()
    stream = PrefixedStream(sink, "[web-1] ", threading.Lock())
    # invoke calls flush() after every chunk it writes (Runner.write_our_output): a line cut between two
    # reads must still come out whole, once.
    for chunk in ("hel", "lo\nwor", "ld\n10", "22\nlast"):
        stream.write(chunk)
        stream.flush()
    assert sink.getvalue() == "[web-1] hello\n[web-1] world\n[web-1] 1022\n"
    stream.end_of_output()
    assert sink.getvalue() == "[web-1] hello\n[web-1] world\n[web-1] 1022\n[web-1] last\n"
    stream.end_of_output()
    assert sink.getvalue().count("last") == 1


def test_concurrent_writers_never_split_a_line() -> None:
    sink = io.StringIO()
    lock = threading.Lock()

    def writer(name: str) -> None:
        stream = PrefixedStream(sink, f"[{name}] ", lock)
        for n in range(200):
            for chunk in (f"{name} line ", f"{n}", "\n"):
                stream.write(chunk)
                stream.flush()  # as invoke does after every chunk

    threads = [threading.Thread(target=writer, args=(f"h{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = sink.getvalue().splitlines()
    assert len(lines) == 800
    for line in lines:
        prefix, _, rest = line.partition("] ")
        assert rest.startswith(prefix[1:] + " line ")


def test_table_aligns_columns() -> None:
    assert table(["A", "LONGER"], [["x", 1], ["yyyy", 22]]).splitlines() == [
        "A     LONGER",
        "----  ------",
        "x     1",
        "yyyy  22",
    ]


def test_progress_line_on_a_terminal_only() -> None:
    from types import SimpleNamespace

    from ssmfab.output import Progress

    sink = io.StringIO()
    progress = Progress(3, sink, enabled=True)
    progress.update(SimpleNamespace(ok=True))
    progress.update(SimpleNamespace(ok=False))
    assert sink.getvalue().endswith("2/3 hosts done, 1 failed")
    progress.update(SimpleNamespace(ok=True, value=SimpleNamespace(bytes=2_500_000)))
    assert sink.getvalue().endswith("3/3 hosts done, 1 failed, 2.5 MB moved")
    progress.close()
    assert sink.getvalue().endswith("\r\x1b[K")
    quiet = io.StringIO()
    Progress(3, quiet).update(SimpleNamespace(ok=True))  # StringIO is not a TTY
    assert quiet.getvalue() == ""


def test_the_progress_line_shows_bytes_rate_and_eta_of_uploads() -> None:
    assert transfer_meter(16_000_000, 64_000_000, 4.0) == "16.0/64.0 MB, 4.0 MB/s, ETA 12 s"
    assert transfer_meter(5_000_000, 0, 2.0) == "5.0 MB, 2.5 MB/s"
    stream = io.StringIO()
    progress = Progress(2, stream, enabled=True)
    progress.expected = 10_000_000
    progress.moving(1_000_000)  # the first chunk draws at once
    line = stream.getvalue().rsplit("\r\x1b[K", 1)[-1]
    assert line.startswith("0/2 hosts done, 0 failed, 1.0/10.0 MB, ") and "MB/s" in line
