"""Host tests of guest-driver/vm/procs.py: commands shown, run with a log,
stopped with their process group."""

import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import procs  # noqa: E402


class Procs(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp(prefix="procs."))

    def test_fmt_cmd_quotes(self):
        self.assertEqual(procs.fmt_cmd(["run", Path("/a b"), "--cases", "pin_*"]),
                         "run '/a b' --cases 'pin_*'")

    def test_run_logged_writes_the_command_then_the_output(self):
        log = self.dir / "x.log"
        seen = []
        rc = procs.run_logged(["sh", "-c", "echo out; echo err >&2; exit 3"], log,
                              on_start=seen.append)
        self.assertEqual(rc, 3)
        self.assertEqual(log.read_text().splitlines(),
                         ["$ sh -c 'echo out; echo err >&2; exit 3'", "out", "err"])
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0].returncode, 3)

    def test_describe_exit(self):
        self.assertEqual(procs.describe_exit(2), "exit 2")
        self.assertEqual(procs.describe_exit(-signal.SIGABRT), "signal SIGABRT")
        sigsys = procs.describe_exit(-signal.SIGSYS)
        self.assertTrue(sigsys.startswith("signal SIGSYS: a system call outside"), sigsys)
        self.assertIn("type=1326", sigsys)

    def test_tail(self):
        f = self.dir / "t.log"
        f.write_text("".join(f"{i}\n" for i in range(20)))
        self.assertEqual(procs.tail(f, 2), "18\n  19")
        (self.dir / "e.log").write_text("")
        self.assertEqual(procs.tail(self.dir / "e.log"), "(empty)")
        self.assertEqual(procs.tail(self.dir / "missing"), "(unreadable)")

    def test_stop_ends_the_group(self):
        p = subprocess.Popen(["sh", "-c", "sleep 30 & wait"], start_new_session=True)
        procs.stop(p, "sleeper")
        self.assertEqual(p.returncode, -signal.SIGTERM)
        procs.stop(p, "sleeper")  # already gone: nothing to do
        procs.stop(None, "nothing")


if __name__ == "__main__":
    unittest.main()
