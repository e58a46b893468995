"""Host tests of several guests on one daemon: external.py (a run attached
to a daemon it did not start: checked, watched, never stopped), run's
--daemon-socket flags, multiguest.py (sockets, commands, the overlap watch
and the verdict) and twoguests' arguments."""

import contextlib
import io
import socket
import sys
import tempfile
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
sys.path.insert(0, str(VM_DIR / "tests"))
import external  # noqa: E402
import multiguest  # noqa: E402
import procs  # noqa: E402
from exitcodes import EXIT_OK, EXIT_RUN, EXIT_SETUP, Fail  # noqa: E402
from test_exitcodes import load_script  # noqa: E402  (a script loaded as a module)


def usage_error(parse, argv):
    """The message of an argparse usage error."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), unittest.TestCase().assertRaises(SystemExit):
        parse(argv)
    return err.getvalue()


class External(unittest.TestCase):
    def test_a_listening_admin_socket_answers_a_missing_one_not(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "admin.sock"
            self.assertFalse(external.admin_answers(path))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(path))
            s.listen(4)
            try:
                self.assertTrue(external.admin_answers(path))
            finally:
                s.close()

    def test_the_daemon_is_alive_while_it_answers_then_gone_for_good(self):
        answers = [True, True, False, True]
        d = external.ExternalDaemon("/x", answers=lambda _: answers.pop(0))
        self.assertEqual((d.poll(), d.poll()), (None, None))
        self.assertEqual(d.poll(), external.GONE)
        self.assertEqual(d.poll(), external.GONE)  # gone stays gone
        self.assertEqual(d.returncode, external.GONE)
        self.assertIsNone(d.pid)
        self.assertEqual(procs.describe_exit(d.returncode), external.GONE)

    def test_attach_names_the_flag_that_is_wrong(self):
        with tempfile.TemporaryDirectory() as d:
            sock = Path(d) / "vu.sock0"
            with self.assertRaises(Fail) as e:
                external.attach(sock, Path(d) / "admin.sock", answers=lambda _: True)
            self.assertEqual(e.exception.code, EXIT_SETUP)
            self.assertIn(f"--daemon-socket {sock}: not a socket", str(e.exception))
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(sock))
            try:
                with self.assertRaises(Fail) as e:
                    external.attach(sock, Path(d) / "admin.sock", answers=lambda _: False)
                self.assertIn("--daemon-admin", str(e.exception))
                daemon, got, admin = external.attach(sock, Path(d) / "admin.sock",
                                                     answers=lambda _: True)
                self.assertEqual((got, daemon.poll()), (sock, None))
            finally:
                s.close()


class RunFlags(unittest.TestCase):
    run_script = load_script("run")

    def test_daemon_socket_and_admin_go_together(self):
        a = self.run_script.parse_args(["--daemon-socket", "/s0", "--daemon-admin", "/a"])
        self.assertEqual((a.daemon_socket, a.daemon_admin), (Path("/s0"), Path("/a")))
        self.assertIn("--daemon-socket and --daemon-admin go together",
                      usage_error(self.run_script.parse_args, ["--daemon-socket", "/s0"]))
        self.assertIn("--daemon-socket and --daemon-admin go together",
                      usage_error(self.run_script.parse_args, ["--daemon-admin", "/a"]))

    def test_daemon_socket_refuses_what_needs_the_runs_own_daemon(self):
        for extra, flag in ((["--faults", "x.toml"], "--faults"), (["--no-device"], "--no-device"),
                            (["--bench"], "--bench"), (["--build-only"], "--build-only")):
            msg = usage_error(self.run_script.parse_args,
                              ["--daemon-socket", "/s0", "--daemon-admin", "/a", *extra])
            self.assertIn("did not start: not with " + flag, msg)


class MultiGuest(unittest.TestCase):
    def test_sockets_follow_the_socket_count_convention(self):
        self.assertEqual([multiguest.socket_path("/o/vu.sock", i) for i in range(2)],
                         [Path("/o/vu.sock0"), Path("/o/vu.sock1")])

    def test_cases_one_for_all_or_one_each(self):
        self.assertEqual(multiguest.guest_cases(["dma_*"], 2), ["dma_*", "dma_*"])
        self.assertEqual(multiguest.guest_cases(["a", "b"], 2), ["a", "b"])
        with self.assertRaises(ValueError) as e:
            multiguest.guest_cases(["a", "b", "c"], 2)
        self.assertIn("--cases: 3 globs for 2 guests", str(e.exception))

    def test_each_run_attaches_to_its_own_socket(self):
        cmd = multiguest.run_command("py", "/b", "/o/vu.sock1", "/o/admin.sock", "/o/guest1",
                                     "lease_*", ["--timeout", "600"])
        self.assertEqual(cmd[1], str(multiguest.RUN))
        for flag, value in (("--reuse", "/b"), ("--daemon-socket", "/o/vu.sock1"),
                            ("--daemon-admin", "/o/admin.sock"), ("--out", "/o/guest1"),
                            ("--cases", "lease_*"), ("--timeout", "600")):
            self.assertEqual(cmd[cmd.index(flag) + 1], value, flag)

    def test_overlap_needs_every_frontend_connected_in_one_snapshot(self):
        f = lambda *c: {"frontends": [{"connected": x, "connections": 1} for x in c]}  # noqa: E731
        self.assertTrue(multiguest.all_connected(f(True, True), 2))
        self.assertFalse(multiguest.all_connected(f(True, False), 2))
        self.assertFalse(multiguest.all_connected(f(True), 2))
        self.assertFalse(multiguest.all_connected({"connected": True}, 2))
        self.assertFalse(multiguest.all_connected(None, 2))
        self.assertEqual(multiguest.served_each(f(True, False), 2), [1, 1])
        self.assertEqual(multiguest.served_each(None, 2), [None, None])

    def test_verdict(self):
        ok = multiguest.verdict([0, 0], True, [1, 1], True)
        self.assertEqual(ok[0], EXIT_OK, ok)
        for codes, overlap, served, alive, want, why in (
                ([0, 1], True, [1, 1], True, 1, "guest 1: vm/run exit 1"),
                ([0, 0], False, [1, 1], True, EXIT_RUN, "no status snapshot"),
                ([0, 0], True, [2, 0], True, EXIT_RUN, "connections served per frontend"),
                ([0, 0], True, [1, 1], False, EXIT_RUN, "did not survive"),
                ([2, 0], True, [1, 1], True, EXIT_SETUP, "guest 0: vm/run exit 2")):
            code, lines = multiguest.verdict(codes, overlap, served, alive)
            self.assertEqual(code, want, lines)
            self.assertTrue(any(why in x for x in lines), lines)


class TwoGuestsFlags(unittest.TestCase):
    tg = load_script("twoguests")

    def test_defaults_and_bad_input(self):
        a = self.tg.parse_args([])
        self.assertEqual((a.cases, a.reuse), (list(self.tg.DEFAULT_CASES), None))
        self.assertEqual(self.tg.parse_args(["--reuse", "/b"]).reuse, Path("/b"))
        a = self.tg.parse_args(["--cases", "query_device", "--", "--debian-kernel", "6.1"])
        self.assertEqual((a.cases, a.run_args), (["query_device"] * 2,
                                                 ["--debian-kernel", "6.1"]))
        self.assertIn("--cases: 3 globs for 2 guests",
                      usage_error(self.tg.parse_args, ["--cases", "a", "b", "c"]))
        self.assertIn("--timeout must be positive, got 0.0",
                      usage_error(self.tg.parse_args, ["--timeout", "0"]))


if __name__ == "__main__":
    unittest.main()
