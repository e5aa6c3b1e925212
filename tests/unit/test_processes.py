"""Reading /proc/<pid>/stat: the command name may hold spaces and parentheses."""

from __future__ import annotations

from serve_app.processes import ProcessRef, parse_stat


def test_stat_fields_are_counted_after_the_last_parenthesis_of_the_command_name() -> None:
    rest = " ".join(str(n) for n in range(7, 30))  # fields 7.. (22 is the start time)
    stat = f"4242 (ray::Serve (x) y) S 17 4242 4000 {rest}"
    found = parse_stat(4242, stat)
    assert (found.state, found.ppid, found.pgid, found.session) == ("S", 17, 4242, 4000)
    assert found.ref == ProcessRef(4242, 22)


def test_a_recorded_process_round_trips_and_junk_lines_are_skipped() -> None:
    ref = ProcessRef(31, 9_000_000)
    assert ProcessRef.from_line(ref.to_line()) == ref
    assert ProcessRef.from_line("31") is None and ProcessRef.from_line("x 1") is None
