"""Child processes of the runner: how a command is shown, started with its
output in a log, stopped with its whole process group, and how it ended.

Python 3 standard library only.
"""

import os
import shlex
import signal
import subprocess
from pathlib import Path

from progress import say


def fmt_cmd(cmd):
    """The command as a shell line a user can paste."""
    return " ".join(shlex.quote(str(c)) for c in cmd)


def run_logged(cmd, log, **popen):
    """Runs CMD to the end with stdout and stderr in the file LOG (its first
    line `$ CMD`); returns the exit code. Extra keyword arguments go to
    subprocess.Popen; with on_start=F, F(proc) is called once it started
    (vm/campaign registers each run to stop it on Ctrl-C)."""
    on_start = popen.pop("on_start", None)
    with open(log, "w") as f:
        f.write(f"$ {fmt_cmd(cmd)}\n")
        f.flush()
        p = subprocess.Popen([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, **popen)
        if on_start is not None:
            on_start(p)
        return p.wait()


def stop(proc, name, sig=signal.SIGTERM, grace=5.0):
    """Stop a process started in its own session: its whole group."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        say(f"{name} (pid {proc.pid}) ignored {signal.Signals(sig).name}; killing")
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    except ProcessLookupError:
        proc.wait()


def describe_exit(rc):
    """'exit N' or 'signal NAME' for a returncode; a text (a process that
    is not ours, external.GONE) as it is. SIGSYS says where to look
    (pinlease serve's seccomp filter killed it: docs/security.md)."""
    if isinstance(rc, str):
        return rc
    if rc >= 0:
        return f"exit {rc}"
    name = signal.Signals(-rc).name
    if -rc == signal.SIGSYS:
        name += (": a system call outside pinlease serve's seccomp allow-list; the kernel log "
                 "names it: dmesg | grep type=1326 (docs/security.md)")
    return f"signal {name}"


def tail(path, n=15):
    """The last N lines of a log, indented for a message; never raises."""
    try:
        lines = Path(path).read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return "(unreadable)"
    return "\n  ".join(lines) if lines else "(empty)"
