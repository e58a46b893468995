"""Host tests of guest-driver/vm/console.py: console lines, the kernel
warning pattern, and kernel crash detection on a real oops (7.3
with the module that lacked lm_open_conflict)."""

import sys
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import console  # noqa: E402
import invariants  # noqa: E402
from ktap import Ktap  # noqa: E402
import markers  # noqa: E402

INV = markers.INVARIANT

OOPS = Path(__file__).resolve().parent / "fixtures" / "oops-7.3-lease-take.log"


def feed_all(lines):
    ktap, crash = Ktap(), console.CrashWatch()
    for line in lines:
        if not crash.feed(line, ktap):
            ktap.feed(line)
    return ktap, crash


class Crash(unittest.TestCase):
    def test_real_oops_names_the_running_case(self):
        lines = OOPS.read_text().replace("\r", "").splitlines()
        ktap, crash = feed_all(lines)
        self.assertTrue(crash.seen())
        self.assertTrue(crash.complete, "the report ends with ---[ end trace")
        self.assertEqual(crash.case, "case 2 of 2: lease_take_release_basic")
        self.assertEqual(crash.title(),
                         "BUG: kernel NULL pointer dereference, address: 0000000000000000")
        summary = crash.summary()
        self.assertEqual(summary[0], "RIP: 0010:0x0")
        self.assertTrue(summary[1].startswith("Call Trace: generic_setlease+"), summary)
        self.assertIn("pl_ioctl_lease_take+", summary[1])
        self.assertNotIn("?", summary[1], "guessed frames are left out")
        self.assertEqual(ktap.counts(), (1, 0, []))

    def test_user_lines_quoting_a_crash_are_not_one(self):
        ktap = Ktap()
        for line in (f"{INV} kernel-warn ok no WARNING:/BUG:/Oops in the log",
                     "# some_case: kernel log: [ 3.1] BUG: sleeping function called",
                     "not ok 3 x # kernel log: Oops: 0002",
                     "pinlease-init: Oops in a message"):
            self.assertFalse(console.CrashWatch().feed(line, ktap), line)

    def test_crashes_without_printk_time_and_panics(self):
        for line in ("Oops: general protection fault, probably for non-canonical address",
                     "kernel BUG at mm/gup.c:123!",
                     "[    5.000000] Kernel panic - not syncing: Fatal exception",
                     "[    5.000000] watchdog: BUG: soft lockup - CPU#0 stuck for 22s!"):
            self.assertTrue(console.CrashWatch().feed(line, Ktap()), line)

    def test_a_warning_is_not_a_crash(self):
        line = "[   12.295917] WARNING: kernel/workqueue.c:5938 at __alloc_workqueue+0x6be/0x7a0"
        self.assertFalse(console.CrashWatch().feed(line, Ktap()))

    def test_report_is_bounded(self):
        crash, ktap = console.CrashWatch(), Ktap()
        crash.feed("[ 1.000000] BUG: unable to handle page fault", ktap)
        for i in range(500):
            crash.feed(f"[ 1.000000] line {i}", ktap)
        self.assertEqual(len(crash.lines), console.CrashWatch.CRASH_LINES)
        self.assertFalse(crash.complete)


class Warnings(unittest.TestCase):
    def test_both_users_see_the_one_pattern(self):
        # The runner's console display and the kernel-warn invariant.
        self.assertIs(invariants.KERNEL_WARNING, console.KERNEL_WARNING)
        self.assertFalse(hasattr(invariants, "KERNEL_WARN"))
        w = invariants.ConsoleWatch()
        for line in ("[ 1.0] WARNING: CPU: 0 PID: 1 at mm/gup.c:1 foo",
                     "[ 1.0] refcount_t: underflow; use-after-free.",
                     "[ 1.0] kernel BUG at mm/gup.c:123!",
                     "[ 1.0] general protection fault, probably for non-canonical address"):
            self.assertTrue(console.KERNEL_WARNING.search(line), line)
            w.feed(line)
        self.assertEqual(len(w.warn), 4)
        self.assertIsNone(console.KERNEL_WARNING.search("[ 1.0] virtio_blk virtio1: 1/0/0"))


class Lines(unittest.TestCase):
    def test_reader_lines_across_chunks(self):
        r = console.LineReader()
        self.assertEqual(r.feed(b"ok 1 a\r\nnot ok 2 b"), ["ok 1 a"])
        self.assertEqual(r.feed(b"[    7.360000] msg\r\n # why\n"),
                         ["[    7.360000] msg", "not ok 2 b # why"])
        self.assertEqual(r.feed(b"tail \xff"), [])
        self.assertEqual(r.feed(b""), ["tail \ufffd"])

    def test_unsplice_glues_a_cut_ktap_line(self):
        u = console.Unsplice()
        out = u.feed("not ok 3 na[    7.360000] msg") + u.feed("me # reason")
        self.assertEqual(out, ["[    7.360000] msg", "not ok 3 name # reason"])


if __name__ == "__main__":
    unittest.main()
