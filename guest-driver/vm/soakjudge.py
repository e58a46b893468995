"""vm/soak's samples and verdict: the guest's sample lines, the daemon's
/proc/PID/status, and whether a series is flat (docs/soak.md).

Flat, the method: the samples are split into four quarters in order; the
first quarter is warm-up (allocator pools, caches and the daemon's tables
reach their working size there) and is not judged; the series is flat when
the mean of the last quarter is within TOLERANCE (5 %) of the mean of the
second quarter, either way. Means of quarters, not single samples: one
sample taken while a case still frees memory does not decide. At least
MIN_SAMPLES samples (two a quarter), else the series is not judged.

Python 3 standard library only.
"""

import re
from pathlib import Path

TOLERANCE = 0.05
MIN_SAMPLES = 8
# What is judged, and what is only shown. The daemon's VmRSS also counts
# the guest RAM pages it touched through its shared mapping (RssShmem),
# which grows as DMA reaches new guest pages without any leak; its own
# memory is RssAnon (heap, stacks).
JUDGED = ("daemon_rss_anon_kb", "guest_slab_kb", "guest_sunreclaim_kb")
SHOWN = ("daemon_vm_rss_kb", "daemon_rss_shmem_kb", "daemon_fds")
STATUS_FIELDS = {"VmRSS": "daemon_vm_rss_kb", "RssAnon": "daemon_rss_anon_kb",
                 "RssShmem": "daemon_rss_shmem_kb", "VmHWM": "daemon_vm_hwm_kb"}
KB_LINE = re.compile(r"^(\w+):\s+(\d+) kB$")


class SampleError(ValueError):
    """A sample line or status file that does not say what it must."""


def serving_pid(pid, proc="/proc"):
    """The process that serves: `pinlease serve` sandboxed (the default,
    docs/security.md) is a supervisor whose one child of the same name is
    the daemon, so the pid vm/run started is followed down to that child;
    unsandboxed it is PID itself."""
    proc = Path(proc)

    def comm(p):
        return (proc / str(p) / "comm").read_text().strip()

    try:
        name = comm(pid)
        while True:
            kids = (proc / str(pid) / "task" / str(pid) / "children").read_text().split()
            same = [int(k) for k in kids if comm(k) == name]
            if len(same) != 1:
                return pid
            pid = same[0]
    except OSError:
        return pid


def parse_proc_status(text):
    """{field: kB} of the STATUS_FIELDS in /proc/PID/status text."""
    got = {}
    for line in text.splitlines():
        m = KB_LINE.match(line.strip())
        if m and m.group(1) in STATUS_FIELDS:
            got[STATUS_FIELDS[m.group(1)]] = int(m.group(2))
    missing = [f for f, k in STATUS_FIELDS.items() if k not in got]
    if missing:
        raise SampleError(f"/proc status without {', '.join(missing)}")
    return got


def parse_guest_sample(line, marker):
    """The guest's `MARKER iter=N uptime=S slab_kb=K sunreclaim_kb=K ok=N
    failed=N` line (any prefix before MARKER) as a dict; None for
    other lines; SampleError for a MARKER line without those fields."""
    at = line.find(marker + " ")
    if at < 0:
        return None
    fields = {}
    for item in line[at + len(marker) + 1:].split():
        key, eq, value = item.partition("=")
        if not eq:
            raise SampleError(f"{marker} line: {item!r} is not KEY=VALUE in {line.strip()!r}")
        fields[key] = value
    want = {"iter": int, "uptime": float, "slab_kb": int, "sunreclaim_kb": int, "ok": int,
            "failed": int}
    out = {}
    for key, conv in want.items():
        try:
            out[key] = conv(fields[key])
        except KeyError:
            raise SampleError(f"{marker} line without {key}=: {line.strip()!r}") from None
        except ValueError:
            raise SampleError(f"{marker} line: {key}={fields[key]!r} is not a number") from None
    return {"iter": out["iter"], "guest_uptime_s": out["uptime"],
            "guest_slab_kb": out["slab_kb"], "guest_sunreclaim_kb": out["sunreclaim_kb"],
            "cases_ok": out["ok"], "cases_failed": out["failed"]}


def mean(xs):
    return sum(xs) / len(xs)


def flatness(values, tolerance=TOLERANCE):
    """The verdict on one series: {"state": flat|not-flat|not-judged,
    "q2_mean", "q4_mean", "change" (fraction), "detail"}."""
    n = len(values)
    if n < MIN_SAMPLES:
        return {"state": "not-judged", "q2_mean": None, "q4_mean": None, "change": None,
                "detail": f"{n} samples, need {MIN_SAMPLES}"}
    q = n // 4
    # Quarters of n // 4 samples; the rest (n % 4) joins the warm-up, so the
    # judged quarters end with the last sample.
    rest = n - 3 * q
    second = values[rest:rest + q]
    last = values[n - q:]
    q2, q4 = mean(second), mean(last)
    change = (q4 - q2) / q2 if q2 else (0.0 if q4 == 0 else float("inf"))
    state = "flat" if abs(change) <= tolerance else "not-flat"
    return {"state": state, "q2_mean": round(q2, 1), "q4_mean": round(q4, 1),
            "change": round(change, 4),
            "detail": f"last quarter {q4:.0f} vs second {q2:.0f}: {change * 100:+.1f} % "
                      f"(limit {tolerance * 100:.0f} %)"}


def judge(samples, tolerance=TOLERANCE):
    """{series: flatness} for the JUDGED series of SAMPLES (dicts)."""
    return {key: flatness([s[key] for s in samples if s.get(key) is not None], tolerance)
            for key in JUDGED}


def verdict(judged):
    """'flat' when every series is, 'not-flat' when one is not, else 'not-judged'."""
    states = {v["state"] for v in judged.values()}
    if "not-flat" in states:
        return "not-flat"
    return "flat" if states == {"flat"} else "not-judged"


def table(samples):
    """The samples as a markdown table (sizes in KiB)."""
    cols = ("iter", "host_s", "guest_uptime_s", "daemon_rss_anon_kb", "daemon_vm_rss_kb",
            "daemon_rss_shmem_kb", "daemon_fds", "guest_slab_kb", "guest_sunreclaim_kb",
            "cases_ok", "cases_failed", "plan")
    out = ["| " + " | ".join(cols) + " |", "|" + "---:|" * (len(cols) - 1) + "---|"]
    for s in samples:
        out.append("| " + " | ".join(str(s.get(c, "")) for c in cols) + " |")
    return "\n".join(out)
