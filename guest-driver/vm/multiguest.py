"""Several guests on one daemon (vm/twoguests): the daemon's command with
one socket per guest (`--socket-count N`), each guest's `vm/run` attached
to its own socket, the watch that proves the guests ran at the same time
(every frontend connected in one status snapshot), and the verdict.

Python 3 standard library only.
"""

from pathlib import Path

from exitcodes import EXIT_OK, EXIT_RUN, EXIT_SETUP

RUN = Path(__file__).resolve().parent / "run"


def socket_path(base, index):
    """Socket INDEX of `pinlease serve --socket-path BASE --socket-count N`
    (the rust-vmm vhost-device convention: BASE0 .. BASE{N-1})."""
    return Path(f"{base}{index}")


def guest_cases(globs, guests):
    """The --cases glob of each guest: one glob for all, or one per guest."""
    if len(globs) == 1:
        return list(globs) * guests
    if len(globs) != guests:
        raise ValueError(f"--cases: {len(globs)} globs for {guests} guests "
                         "(give one for all, or one per guest)")
    return list(globs)


def run_command(python, build, sock, admin, out, cases, extra=()):
    """The `vm/run` of one guest, attached to socket SOCK of the daemon."""
    return [python, str(RUN), "--reuse", str(build), "--daemon-socket", str(sock),
            "--daemon-admin", str(admin), "--out", str(out), "--cases", cases, *extra]


def frontends(reply):
    """The `frontends` list of a status reply (a daemon with one socket
    has it too), or [] when the reply has none."""
    f = reply.get("frontends") if isinstance(reply, dict) else None
    return f if isinstance(f, list) else []


def all_connected(reply, guests):
    """True when the snapshot shows GUESTS frontends, each connected."""
    f = frontends(reply)
    return len(f) == guests and all(x.get("connected") is True for x in f)


def served_each(reply, guests):
    """Per frontend, the connections it served (None when absent)."""
    f = frontends(reply)
    return [f[i].get("connections") if i < len(f) else None for i in range(guests)]


def verdict(run_codes, overlap_seen, served, daemon_alive):
    """(exit code, lines saying why) of the whole two-guest run."""
    lines, code = [], EXIT_OK
    for i, rc in enumerate(run_codes):
        lines.append(f"guest {i}: vm/run exit {rc}")
        if rc != EXIT_OK:
            code = max(code, rc if rc in (1, EXIT_SETUP, EXIT_RUN) else EXIT_RUN)
    if not daemon_alive:
        lines.append("the shared daemon did not survive the guests")
        code = max(code, EXIT_RUN)
    if any(n != 1 for n in served):
        lines.append(f"connections served per frontend {served}, not one guest each")
        code = max(code, EXIT_RUN)
    if not overlap_seen:
        lines.append("no status snapshot showed every guest connected at once")
        code = max(code, EXIT_RUN)
    else:
        lines.append("every guest was connected at the same time (status snapshot)")
    return code, lines
