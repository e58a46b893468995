"""Heartbeats (progress.py) while a real slow subprocess runs: each test's
subprocess waits until a heartbeat line has appeared, so it proves the line
comes while the step runs (no timed assert), with the step's last log line;
Steps.run (build.py) and the boot line (guest.py) use them."""

import contextlib
import subprocess
import sys
import tempfile
import threading
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import build  # noqa: E402
import guest  # noqa: E402
import progress  # noqa: E402

# A subprocess waiting for a file to contain a heartbeat gives up after
# this long (it exits 1 then, and the test fails on that, not on time).
WAIT_LIMIT_S = 60


def wait_for_text_script(path, text):
    """sh: prints `Compiling foo v1.0`, then waits until PATH has a match of
    the regex TEXT (written so the command line shown does not match it)."""
    return ["sh", "-c", f"echo '   Compiling foo v1.0'; i=0; while ! grep -q '{text}' '{path}' "
            f"2>/dev/null; do i=$((i+1)); [ $i -gt {WAIT_LIMIT_S * 20} ] && exit 1; "
            "sleep 0.05; done; echo done"]


class HeartbeatLines(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def test_beats_while_a_subprocess_runs_with_its_last_line(self):
        log, beats = self.dir / "build.log", self.dir / "beats"
        lock = threading.Lock()
        lines = []

        def emit(line):
            with lock:
                lines.append(line)
                beats.write_text("\n".join(lines) + "\n")

        with open(log, "w") as f, progress.Heartbeat("build tool", log, 0.05, emit) as hb:
            rc = subprocess.run(wait_for_text_script(beats, "Compilin[g] foo"), stdout=f).returncode
        self.assertEqual(rc, 0, "no heartbeat line with the log's last line came")
        self.assertRegex(lines[0], r"^build tool: still running, \d+ s; last line: Compiling foo "
                         r"v1\.0$")
        after = hb.beats
        self.assertFalse(hb._thread.is_alive())
        self.assertEqual(hb.beats, after)

    def test_no_output_yet(self):
        hb = progress.Heartbeat("build x", self.dir / "missing.log")
        hb._t0 = 0
        self.assertTrue(hb.line().endswith("; no output yet"))
        self.assertIsNone(progress.Heartbeat("probe").log)

    def test_last_line(self):
        f = self.dir / "l"
        f.write_bytes(b"a\n  b  \n\n\n")
        self.assertEqual(progress.last_line(f), "b")
        f.write_bytes(b"x" * 10000 + b"\nprogress 10%\rprogress 90%\r\n")
        self.assertEqual(progress.last_line(f), "progress 90%")
        f.write_bytes(b"y" * 500)
        self.assertEqual(progress.last_line(f), "y" * (progress.LINE_CHARS - 3) + "...")
        self.assertEqual(progress.last_line(self.dir / "none"), "")

    def test_steps_run_beats_on_stdout(self):
        """build.Steps.run: the heartbeat goes to stdout (here a file the
        step itself watches) between the step's start and done lines."""
        stdout = self.dir / "stdout"
        steps = build.Steps(self.dir)
        steps.heartbeat_secs = 0.05
        with open(stdout, "w") as f, contextlib.redirect_stdout(f):
            steps.run("slow", wait_for_text_script(stdout, "still runnin[g].*Compiling foo"),
                      cwd=self.dir)
        steps.cmdlog.close()
        out = stdout.read_text().splitlines()
        self.assertRegex(out[0], r"build slow: sh -c ")
        self.assertRegex(out[1], r"build slow: still running, \d+ s; last line: Compiling foo")
        self.assertRegex(out[-1], r"build slow: done in \d+\.\d s$")
        for line in out:  # whole lines only: each starts with the stamp
            self.assertRegex(line, r"^\[ *\d+\.\ds\] build slow: ")

    def test_ticker(self):
        t = progress.Ticker(3600)
        self.assertFalse(t.due())
        t.next = 0
        self.assertTrue(t.due())
        self.assertFalse(t.due())

    def test_boot_wait_line(self):
        self.assertEqual(guest.boot_wait_line(31.4, "[    2.345678] Freeing unused kernel memory"),
                         "boot: 31 s since QEMU started, waiting for /init; last console line: "
                         "Freeing unused kernel memory")
        self.assertTrue(guest.boot_wait_line(15, "").endswith("no console output yet"))


if __name__ == "__main__":
    unittest.main()
