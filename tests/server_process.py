"""What the black-box tests look at in a server from the outside: its
processes (through /proc) and the sanitizer reports in its stderr.

Shared by tests/conformance/conformance.py, tests/scale/scale.py and
tests/forking/kill_child.py, which put this folder on sys.path. Standard
library only; Linux.
"""

import os

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "LeakSanitizer",
                     "runtime error:", "WARNING: ThreadSanitizer",
                     "SUMMARY: ")


def sanitizer_report(text):
    """The sanitizer report found in a server's stderr, or ''."""
    for marker in SANITIZER_MARKERS:
        at = text.find(marker)
        if at >= 0:
            start = text.rfind("\n", 0, max(0, at - 2000)) + 1
            return text[start:start + 6000]
    return ""


def process_table():
    """{pid: (ppid, process group)} of every live process (no zombies)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if fields[0] not in "ZX":
            table[int(entry)] = (int(fields[1]), int(fields[2]))
    return table


# Kernels with CONFIG_PROC_CHILDREN list each task's children: no need to
# scan every process (the machine may run thousands).
CHILDREN_FILES = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def children(pid):
    """The children of pid (an empty set once pid is gone)."""
    kids = set()
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as listing:
                kids.update(int(kid) for kid in listing.read().split())
    except OSError:
        pass
    return kids


def descendants(pid):
    """The processes below pid (children, their children...)."""
    found, frontier = set(), {pid}
    if CHILDREN_FILES:
        while frontier:
            frontier = set().union(*map(children, frontier)) - found
            found |= frontier
        return found
    table = process_table()
    while frontier:
        frontier = {p for p, (ppid, _) in table.items()
                    if ppid in frontier and p not in found}
        found |= frontier
    return found


def alive(pid):
    """True while pid is a process that is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except OSError:
        return False
    return text[text.rindex(")") + 2] not in "ZX"


def group_members(pgid):
    """Live processes in a process group (a full scan only when the
    group is not empty)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    except PermissionError:
        pass
    return [pid for pid, (_, group) in process_table().items()
            if group == pgid]
