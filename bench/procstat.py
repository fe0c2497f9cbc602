"""CPU time and memory of processes, read from /proc (Linux only).

CPU of a process is utime+stime (all its threads) plus cutime+cstime (children
it has reaped), so a snapshot sum over a set of live processes, taken before
and after a run, counts the CPU spent in between, including by children that
were born or died meanwhile (their time lands in the parent's cutime). For the
shared servers (PostgreSQL, RabbitMQ) only the processes' own time is counted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
RABBITMQ_COMMS = frozenset({"beam.smp", "erl_child_setup", "epmd", "inet_gethost"})
# A PostgreSQL client backend's title: "postgres: [cluster: ]USER DB HOST(PORT) STATE".
_PG_BACKEND = re.compile(
    r"^postgres: (?:[^:]+: )?(?P<user>\S+) (?P<db>\S+) (?:\[local\]|\S*\(\d+\))"
)


@dataclass(frozen=True, slots=True)
class Stat:
    pid: int
    ppid: int
    comm: str
    own_ticks: int  # utime + stime
    child_ticks: int  # cutime + cstime


def read_stat(pid: int) -> Stat | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    return Stat(
        pid=pid,
        ppid=int(rest[1]),
        comm=comm,
        own_ticks=int(rest[11]) + int(rest[12]),
        child_ticks=int(rest[13]) + int(rest[14]),
    )


def all_stats() -> dict[int, Stat]:
    stats: dict[int, Stat] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                stats[stat.pid] = stat
    return stats


def cmdline(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def status_kib(pid: int, key: str) -> int:
    """A `key:  N kB` line of /proc/<pid>/status (VmRSS, VmHWM), 0 if gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def descendants(root: int, stats: dict[int, Stat]) -> list[int]:
    children: dict[int, list[int]] = {}
    for s in stats.values():
        children.setdefault(s.ppid, []).append(s.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            found.append(pid)
            todo.extend(children.get(pid, ()))
    return found


def postgres_pids(stats: dict[int, Stat], database: str) -> list[int]:
    """The server's own processes (postmaster, checkpointer, WAL writer, ...) and
    the client backends of `database`; other databases' backends are left out."""
    pids = []
    for s in stats.values():
        if s.comm != "postgres":
            continue
        match = _PG_BACKEND.match(cmdline(s.pid))
        if match is None or match.group("db") == database:
            pids.append(s.pid)
    return pids


def rabbitmq_pids(stats: dict[int, Stat]) -> list[int]:
    return [s.pid for s in stats.values() if s.comm in RABBITMQ_COMMS]


@dataclass
class Groups:
    """Named groups of processes: each of our services (with its descendants),
    PostgreSQL, RabbitMQ, and reference processes (mock, Envoy hop)."""

    roots: dict[str, int] = field(default_factory=dict)  # service name -> pid
    database: str = ""
    with_servers: bool = True

    def resolve(self, stats: dict[int, Stat]) -> dict[str, list[int]]:
        groups = {name: descendants(pid, stats) for name, pid in self.roots.items()}
        if self.with_servers:
            groups["postgres"] = postgres_pids(stats, self.database)
            groups["rabbitmq"] = rabbitmq_pids(stats)
        return groups


# Shared servers: their reaped children are not counted. The postmaster reaps
# every backend, also other databases' (another test run's), and our services
# keep their backends open in pools, so nothing of ours is lost this way.
OWN_TIME_ONLY = frozenset({"postgres", "rabbitmq"})


def cpu_ticks(groups: Groups) -> dict[str, int]:
    stats = all_stats()
    out = {}
    for name, pids in groups.resolve(stats).items():
        if name in OWN_TIME_ONLY:
            out[name] = sum(stats[p].own_ticks for p in pids)
        else:
            out[name] = sum(stats[p].own_ticks + stats[p].child_ticks for p in pids)
    return out


def cpu_delta_seconds(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    return {
        name: max(0, after.get(name, 0) - before.get(name, 0)) / CLK_TCK
        for name in sorted(set(before) | set(after))
    }


def memory_kib(roots: dict[str, int], key: str) -> dict[str, int]:
    """VmRSS / VmHWM of each service, summed over the service's processes."""
    stats = all_stats()
    return {
        name: sum(status_kib(p, key) for p in descendants(pid, stats))
        for name, pid in roots.items()
    }


def system_busy_seconds() -> float:
    """CPU time the whole machine has spent in processes so far (all CPUs,
    /proc/stat): user, nice, system, plus steal (time a hypervisor gave to
    other guests). Interrupt and softirq time is left out: it is mostly
    loopback networking that no process is charged with."""
    fields = (PROC / "stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + steal) / CLK_TCK


def machine() -> dict[str, str | int | float]:
    model = "unknown"
    for line in (PROC / "cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in (PROC / "meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count() or 0,
        "cpu_model": model,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": os.uname().release,
        "loadavg_at_start": " ".join((PROC / "loadavg").read_text().split()[:3]),
    }
