"""A run attached to a daemon it did not start (`run --daemon-socket PATH
--daemon-admin ADMIN`, as vm/twoguests does for several guests on one
daemon): the daemon checked before QEMU starts, and an object standing in
for the run's own daemon process, so the guest run watches it the same way
(alive while its admin socket answers) but never stops it.

Python 3 standard library only.
"""

import socket

from exitcodes import setup_error

# What a run reports when the external daemon went away: not our child, so
# its exit status is not ours to know.
GONE = "ended (not this run's child: exit status unknown)"


def admin_answers(admin, timeout=2.0):
    """True when something accepts connections on the admin socket ADMIN."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(admin))
        return True
    except OSError:
        return False
    finally:
        s.close()


class ExternalDaemon:
    """Stands in for the run's `pinlease serve` Popen: poll() is None while
    the daemon's admin socket answers, then GONE (also its returncode);
    pid is None, so nothing signals it."""

    pid = None

    def __init__(self, admin, answers=admin_answers):
        self.admin = admin
        self.returncode = None
        self._answers = answers

    def poll(self):
        if self.returncode is None and not self._answers(self.admin):
            self.returncode = GONE
        return self.returncode


def attach(sock, admin, answers=admin_answers):
    """(daemon, socket, admin) for --daemon-socket SOCK --daemon-admin
    ADMIN; a setup error naming the flag when the socket is not there or
    the admin socket does not answer."""
    if not sock.is_socket():
        raise setup_error(f"--daemon-socket {sock}: not a socket (start `pinlease serve` first)")
    if not answers(admin):
        raise setup_error(f"--daemon-admin {admin}: no daemon answers on it")
    return ExternalDaemon(admin, answers), sock, admin
