"""Host tests of guest-driver/vm/daemon.py with a stand-in for the daemon
(a script that listens, exits or hangs as told): starting it, the errors
when it does not listen, and status snapshots."""

import json
import os
import sys
import tempfile
import unittest
from pathlib import Path
from unittest import mock

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import daemon  # noqa: E402
from exitcodes import EXIT_RUN, EXIT_SETUP, Fail  # noqa: E402
from procs import stop  # noqa: E402

# Behaves as $FAKE_DAEMON says: "listen" (both sockets, then sleep), "exit"
# (exit 4 at once), "hang" (never listen); `status` prints a reply.
FAKE = """#!/usr/bin/env python3
import json, os, socket, sys, time
args = sys.argv[1:]
if "status" in args:
    print(json.dumps({"contexts": [1, 2], "mrs": [], "connected": True})
          if "--json" in args else "CONTEXTS 2")
    sys.exit(0)
how = os.environ.get("FAKE_DAEMON", "listen")
if how == "exit":
    print("refusing the plan")
    sys.exit(4)
if how == "listen":
    socks = []
    for flag in ("--socket-path", "--admin-socket"):
        s = socket.socket(socket.AF_UNIX)
        s.bind(args[args.index(flag) + 1])
        socks.append(s)
    print("INFO sandbox: namespace (no capabilities)", flush=True)
    print("INFO seccomp: kill (58 system calls allowed)", flush=True)
time.sleep(60)
"""


class Steps:
    def __init__(self):
        self.cmds = []

    def record(self, cmd):
        self.cmds.append(cmd)


class FaultRun:
    daemon_plan, seed, abort_report = Path("OUT/faults.toml"), 7, Path("OUT/abort.json")


class Daemon(unittest.TestCase):
    def setUp(self):
        self.out = Path(tempfile.mkdtemp(prefix="daemon."))
        self.bin = self.out / "fake-pinlease"
        self.bin.write_text(FAKE)
        self.bin.chmod(0o755)

    def start(self, how, fault_run=None):
        with mock.patch.dict(os.environ, {"FAKE_DAEMON": how}):
            return daemon.start(self.out, self.bin, Steps(), 20, fault_run)

    def test_command_line(self):
        self.assertEqual(daemon.serve_command("/d", "/v.sock", "/a.sock", "warn",
                                              "--max-connections", 1),
                         ["/d", "--log-level", "warn", "serve", "--socket-path", "/v.sock",
                          "--admin-socket", "/a.sock", "--max-connections", "1"])

    def test_start_listening(self):
        proc, sock, admin = self.start("listen")
        try:
            self.assertEqual((sock, admin), (self.out / "vu.sock", self.out / "admin.sock"))
            self.assertIsNone(proc.poll())
            self.assertTrue(daemon.take_status(self.bin, admin, self.out))
            self.assertEqual(json.loads((self.out / "status.json").read_text())["contexts"],
                             [1, 2])
            self.assertTrue(daemon.take_status_text(self.bin, admin, self.out, "s-x.txt"))
            self.assertEqual((self.out / "s-x.txt").read_text(), "CONTEXTS 2\n")
        finally:
            stop(proc, "fake daemon")

    def test_confinement_as_logged(self):
        log = self.out / "daemon.log"
        log.write_text("x sandbox: chroot (no capabilities)\ny seccomp: log (5 calls)\n")
        self.assertEqual(daemon.confinement(log), "sandbox chroot, seccomp log")
        log.write_text("WARN sandbox: none\n")
        self.assertEqual(daemon.confinement(log, wait=0.1), "sandbox none, seccomp unknown")

    def test_exit_before_listening(self):
        with self.assertRaises(Fail) as cm:
            self.start("exit")
        self.assertEqual(cm.exception.code, EXIT_RUN)
        self.assertIn("exited (exit 4) before listening", str(cm.exception))
        self.assertIn("refusing the plan", str(cm.exception), "the log's tail")
        # Under --faults the daemon refused the plan: a setup problem.
        with self.assertRaises(Fail) as cm:
            self.start("exit", FaultRun())
        self.assertEqual(cm.exception.code, EXIT_SETUP)
        self.assertIn("refusing OUT/faults.toml?", str(cm.exception))

    def test_never_listening(self):
        with mock.patch.object(daemon, "LISTEN_TIMEOUT", 0.3):
            with self.assertRaises(Fail) as cm:
                self.start("hang")
        self.assertEqual(cm.exception.code, EXIT_RUN)
        self.assertIn("did not create", str(cm.exception))

    def test_fault_run_arguments(self):
        steps = Steps()
        with mock.patch.dict(os.environ, {"FAKE_DAEMON": "exit"}):
            with self.assertRaises(Fail):
                daemon.start(self.out, self.bin, steps, 0, FaultRun())
        self.assertEqual(steps.cmds[0][-8:], ["--scrub-period-ms", "0", "--faults",
                                              "OUT/faults.toml", "--fault-seed", "7",
                                              "--abort-report", "OUT/abort.json"])

    def test_socket_path_too_long(self):
        with self.assertRaises(Fail) as cm:
            daemon.start(Path("/tmp/" + "x" * 100), self.bin, Steps())
        self.assertEqual(cm.exception.code, EXIT_SETUP)

    def test_summarize_status(self):
        self.assertEqual(daemon.summarize_status({"connected": True, "contexts": [1],
                                                  "faults": {}}),
                         "connected: True, contexts: 1")
        self.assertEqual(daemon.summarize_status([]), "see file")
        reply = {"connected": True, "connections": 1, "faults": {},
                 "status": {"contexts": [1, 2], "mrs": [], "leases": [3], "pinned_pages": 7}}
        self.assertEqual(daemon.summarize_status(reply),
                         "connected: True, connections: 1, contexts: 2, mrs: 0, leases: 1, "
                         "pinned_pages: 7")
        two = {"frontends": [{"connected": True, "connections": 1},
                             {"connected": False, "connections": 2}], "faults": {}}
        self.assertEqual(daemon.summarize_status(two),
                         "frontend 0: connected: True, connections: 1; "
                         "frontend 1: connected: False, connections: 2")


if __name__ == "__main__":
    unittest.main()
