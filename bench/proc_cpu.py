"""CPU time a server spends, read from /proc: what `make bench` divides by Envoy's counted requests to report a
server's CPU per Check (µs), a figure that depends far less than req/s on what else the machine is doing; and
the machine's busy time, so the bench can say how much of the machine others took during a run.

A server may run as a process tree (a supervisor and its workers, granian's worker processes), so the time is
summed over the process and every live descendant. Each process contributes utime + stime and also cutime +
cstime, the time of its children that ended and were reaped: a worker that exits during the measured run keeps
its CPU in the sum, moved to its parent's account, rather than vanishing from it.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")
_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def available() -> bool:
    return (_PROC / "self" / "stat").exists()


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces and parentheses), or None for
    a process that is gone. Index 0 is field 3 (state) of proc(5), so field n is at index n - 3."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rfind(")") + 2 :].split()


def _tree(root: int) -> list[int]:
    """root and its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat: user, nice, system, irq,
    softirq and steal; guest time is already within user)."""
    fields = (_PROC / "stat").read_text().split("\n", 1)[0].split()
    assert fields[0] == "cpu", "the first line of /proc/stat sums every core"
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS_PER_SECOND


def own_seconds() -> float:
    """CPU seconds of this process (every thread) and of its children that ended and were reaped (wrk's runs)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def cpu_seconds(root: int) -> float:
    """User plus system CPU seconds used so far by root and its descendants (see the module's note)."""
    ticks = 0
    for pid in _tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            # utime (14), stime (15), cutime (16), cstime (17)
            ticks += sum(int(value) for value in fields[11:15])
    return ticks / _TICKS_PER_SECOND
