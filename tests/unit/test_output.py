"""Host-prefixed output keeps whole lines together, whatever chunks Fabric hands over."""

from __future__ import annotations

import io
import threading
from typing import Any

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
    assert sink.getvalue().split("\r\x1b[K")[-1] == "2/3 hosts done, 1 failed"
    progress.update(SimpleNamespace(ok=True, value=SimpleNamespace(bytes=2_500_000)))
    assert sink.getvalue().split("\r\x1b[K")[-1] == "3/3 hosts done, 1 failed, 2.5 MB moved"
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


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def last_status(sink: io.StringIO) -> str:
    return sink.getvalue().split("\r\x1b[K")[-1]


def test_progress_adds_up_the_bytes_of_every_host_and_shows_itself_on_a_terminal() -> None:
    from types import SimpleNamespace

    from ssmfab.output import Progress

    sink = Terminal()
    progress = Progress(2, sink)  # not told: a terminal gets the line
    progress.update(SimpleNamespace(ok=True, value=SimpleNamespace(bytes=1_000_000)))
    progress.update(SimpleNamespace(ok=True, value=SimpleNamespace(bytes=50_001)))
    assert last_status(sink) == "2/2 hosts done, 0 failed, 1.1 MB moved"


def test_host_lines_clear_the_progress_line_and_redraw_it_after() -> None:
    from ssmfab.output import HostStreams, Progress
    from ssmfab.targets import Target

    out, err = Terminal(), Terminal()
    progress = Progress(2, err, enabled=True)
    hosts = [Target(id="i-0000000000000000a", name="web-1"), Target(id="i-0000000000000000b")]
    streams = HostStreams(hosts, out, err, progress)
    assert streams.lock is progress.lock  # one lock: a host line never lands inside the status line
    first, second = (streams.for_target(t) for t in hosts)
    status = "\r\x1b[K0/2 hosts done, 0 failed"  # the progress line, drawn on stderr
    first["out_stream"].write("one\ntwo\nthr")  # two whole lines in one chunk, and a partial one
    assert out.getvalue() == "[web-1              ] one\n[web-1              ] two\n"
    assert err.getvalue() == "\r\x1b[K" + status  # cleared before the lines, drawn again after
    second["err_stream"].write("oops\n")
    assert err.getvalue() == "\r\x1b[K" + status + "\r\x1b[K[i-0000000000000000b] oops\n" + status
    first["out_stream"].end_of_output()
    assert out.getvalue().endswith("two\n[web-1              ] thr\n")
    first["out_stream"].write("later\n")  # what ended was printed once; a new line starts afresh
    assert out.getvalue().endswith("thr\n[web-1              ] later\n")
    assert err.getvalue().endswith(status + ("\r\x1b[K" + status) * 2)
    assert not first["out_stream"].isatty()


def test_host_streams_without_progress_write_plain_lines() -> None:
    from ssmfab.output import HostStreams
    from ssmfab.targets import Target

    out, err = io.StringIO(), io.StringIO()
    streams = HostStreams([Target(id="i-1", name="a"), Target(id="i-2", name="bbb")], out, err)
    streams.for_target(Target(id="i-1", name="a"))["out_stream"].write("x\n")
    assert out.getvalue() == "[a  ] x\n" and err.getvalue() == ""
    assert HostStreams([], out, err).width == 0


def sample_result() -> Any:
    from ssmfab.fleet import FleetResult, HostResult
    from ssmfab.targets import Target

    ok = HostResult(Target(id="i-1", name="web-1"), value="v1", exit_code=0, started=10.0, ended=11.23456)
    failed = HostResult(Target(id="i-2", name="web-2"), error="web-2 (i-2): `x` exited 3", exit_code=3, started=10.0, ended=10.5)
    lost = HostResult(Target(id="i-3"), error="i-3: connection lost", started=10.0, ended=12.0)
    skipped = HostResult(Target(id="i-4", name="web-4"), error="not started", skipped=True)
    return FleetResult([ok, failed, lost, skipped])


def test_summary_table_shows_each_host_status_exit_and_time() -> None:
    from ssmfab.output import summary_table

    assert summary_table(sample_result()).splitlines() == [
        "HOST  NAME   STATUS   EXIT  TIME   NOTE",
        "----  -----  -------  ----  -----  -----------",
        "i-1   web-1  ok       0     1.23s",
        "i-2   web-2  failed   3     0.50s",
        "i-3          failed   -     2.00s",
        "i-4   web-4  skipped  -     -      not started",
        "1 ok, 2 failed, 1 not started",
    ]


def test_report_dict_has_one_entry_per_host_and_what_describe_adds() -> None:
    from ssmfab.output import report_dict

    report = report_dict(sample_result(), describe=lambda value: {"stdout": f"{value} out"})
    assert (report["ok"], report["failed"], report["not_started"]) == (1, 2, 1)
    assert report["hosts"][0] == {
        "instance_id": "i-1", "name": "web-1", "account": None, "region": None, "status": "ok", "exit_code": 0,
        "duration": 1.235, "error": None,  # milliseconds
        "stdout": "v1 out",
    }  # fmt: skip
    assert report["hosts"][1] == {
        "instance_id": "i-2", "name": "web-2", "account": None, "region": None, "status": "failed", "exit_code": 3,
        "duration": 0.5,
        "error": "web-2 (i-2): `x` exited 3",
    }  # fmt: skip
    assert [h["status"] for h in report["hosts"]] == ["ok", "failed", "failed", "skipped"]
    assert "stdout" not in report["hosts"][2]  # no value: nothing to describe
    assert report_dict(sample_result())["hosts"][0].keys() == {
        "instance_id", "name", "account", "region", "status", "exit_code", "duration", "error",
    }  # fmt: skip


def test_hosts_table_lists_targets_then_skipped_hosts_with_dashes_for_what_is_unknown() -> None:
    from ssmfab.output import format_tags, hosts_table
    from ssmfab.targets import Selection, Selector, Skipped, Target

    web = Target(id="i-1", name="web-1", tags={"Name": "web-1", "Role": "web", "Env": "prod"}, private_ip="10.0.0.1",
                 ping_status="Online")  # fmt: skip
    gone = Target(id="i-2", name="old", state="", ping_status="", private_ip="", tags={"Role": "db"})
    selection = Selection([web], [Skipped(gone, "agent offline")], Selector(), "us-east-1")
    assert hosts_table(selection).splitlines() == [
        "ID   NAME   STATE    SSM     IP        TAGS",
        "---  -----  -------  ------  --------  -----------------",
        "i-1  web-1  running  Online  10.0.0.1  Env=prod,Role=web",
        "i-2  old    -        -       -         Role=db",
    ]
    assert format_tags({}) == ""
