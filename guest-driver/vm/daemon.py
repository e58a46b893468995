"""The daemon of a run: `pinlease serve` started in its own session and
waited for until it listens (the run's daemon, and the throwaway one of a
mode probe in qemu.py), and `pinlease status` snapshots of it.

Python 3 standard library only.
"""

import json
import re
import subprocess
import time

from exitcodes import EXIT_RUN, EXIT_SETUP, Fail, setup_error
from procs import describe_exit, stop, tail
from progress import say

# A daemon that does not listen by then will not: it is stuck or refused.
LISTEN_TIMEOUT = 10.0
STATUS_TIMEOUT = 15


def serve_command(daemon_bin, sock, admin, log_level, *extra):
    return [str(daemon_bin), "--log-level", log_level, "serve", "--socket-path", str(sock),
            "--admin-socket", str(admin), *map(str, extra)]


def launch(cmd, log):
    """Starts `pinlease serve` CMD with its output in the open file LOG, in
    its own session (procs.stop ends its group)."""
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_listening(proc, sockets, poll):
    """Waits until every path in SOCKETS is a socket: "listening", or
    "exited" (the daemon ended first) or "timeout" (LISTEN_TIMEOUT)."""
    deadline = time.monotonic() + LISTEN_TIMEOUT
    while not all(s.is_socket() for s in sockets):
        if proc.poll() is not None:
            return "exited"
        if time.monotonic() > deadline:
            return "timeout"
        time.sleep(poll)
    return "listening"


def start(out, daemon_bin, steps, scrub_period_ms=0, fault_run=None):
    """The run's daemon, listening on OUT/vu.sock and OUT/admin.sock:
    (process, vhost-user socket, admin socket). Fail when it does not
    listen (a setup problem under --faults: the daemon refused the plan)."""
    sock, admin = out / "vu.sock", out / "admin.sock"
    if len(str(sock)) > 100:
        raise setup_error(f"--out {out} is too long for a unix socket path ({sock})")
    extra = ["--scrub-period-ms", scrub_period_ms]
    if fault_run is not None:
        extra += ["--faults", fault_run.daemon_plan, "--fault-seed", fault_run.seed,
                  "--abort-report", fault_run.abort_report]
    cmd = serve_command(daemon_bin, sock, admin, "info", *extra)
    steps.record(cmd)
    with open(out / "daemon.log", "w") as log:  # the daemon has its own copy
        proc = launch(cmd, log)
    state = wait_listening(proc, (sock, admin), poll=0.05)
    if state == "exited":
        # Under --faults this is the daemon refusing the plan: a setup problem.
        raise Fail(f"pinlease serve exited ({describe_exit(proc.returncode)}) before "
                   f"listening" + (f" (refusing {fault_run.daemon_plan}?)" if fault_run else "")
                   + f"; {out}/daemon.log:\n  {tail(out / 'daemon.log')}",
                   EXIT_SETUP if fault_run else EXIT_RUN)
    if state == "timeout":
        stop(proc, "pinlease serve")
        raise Fail(f"pinlease serve did not create {sock} and {admin} within "
                   f"{LISTEN_TIMEOUT:.0f} s", EXIT_RUN)
    say(f"pinlease serve running (pid {proc.pid}), socket {sock}, scrubber "
        + (f"every {scrub_period_ms} ms" if scrub_period_ms else "off") + ", "
        + confinement(out / "daemon.log"))
    return proc, sock, admin


def confinement(log_path, wait=LISTEN_TIMEOUT, poll=0.05):
    """'sandbox MODE, seccomp MODE' as the daemon logged them (its
    defaults, or PINLEASE_SANDBOX / PINLEASE_SECCOMP from the environment);
    the daemon logs seccomp just before it starts its admin socket."""
    deadline = time.monotonic() + wait
    while True:
        try:
            text = log_path.read_text(errors="replace")
        except OSError:
            text = ""
        found = {k: re.search(rf"\b{k}: (\w+)", text) for k in ("sandbox", "seccomp")}
        if all(found.values()) or time.monotonic() > deadline:
            return ", ".join(f"{k} {m.group(1) if m else 'unknown'}" for k, m in found.items())
        time.sleep(poll)


def _status(daemon_bin, admin, out, name, what, *flags):
    """Runs `pinlease status [FLAGS]` into OUT/NAME; the reply, or None
    (said why) when it timed out or failed."""
    cmd = [str(daemon_bin), "status", "--admin-socket", str(admin), *flags]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=STATUS_TIMEOUT)
    except subprocess.TimeoutExpired:
        say(f"WARNING: `{what}` timed out after {STATUS_TIMEOUT} s; no {name}")
        return None
    if r.returncode != 0:
        say(f"WARNING: `{what}` failed ({describe_exit(r.returncode)}): {r.stderr.strip()}")
        return None
    (out / name).write_text(r.stdout)
    return r.stdout


def take_status(daemon_bin, admin, out, name="status.json"):
    """`pinlease status --json` into OUT/NAME; True when written."""
    reply = _status(daemon_bin, admin, out, name, "pinlease status --json", "--json")
    if reply is None:
        return False
    try:
        say(f"{name} written ({summarize_status(json.loads(reply))})")
    except ValueError:
        say(f"{name} written (not valid JSON!)")
    return True


def take_status_text(daemon_bin, admin, out, name):
    """`pinlease status` (the text tables) into OUT/NAME."""
    return _status(daemon_bin, admin, out, name, "pinlease status") is not None


def summarize_status(st):
    """A one-line digest of the status reply, tolerant of its exact shape.
    A daemon with several sockets has no top-level fields: each frontend
    (`frontends`) is summed up instead."""
    fronts = st.get("frontends") if isinstance(st, dict) else None
    if isinstance(fronts, list) and len(fronts) > 1 and "connected" not in st:
        return "; ".join(f"frontend {i}: " + summarize_status(f) for i, f in enumerate(fronts))
    parts = []
    # The device's tables are under "status" in the daemon's reply (and at
    # the top of a bare device snapshot).
    device = st.get("status") if isinstance(st, dict) else None
    for key in ("connected", "connections", "contexts", "mrs", "leases", "pinned_pages"):
        v = st.get(key) if isinstance(st, dict) else None
        if v is None and isinstance(device, dict):
            v = device.get(key)
        if isinstance(v, list):
            parts.append(f"{key}: {len(v)}")
        elif v is not None and not isinstance(v, dict):
            parts.append(f"{key}: {v}")
    return ", ".join(parts) or "see file"
