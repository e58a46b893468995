"""Host tests of guest-driver/vm/rdma_userspace.py (`run --rdma-tests`):
the flag's values, the guest script, the module order, and the parsers and
verdicts against console output captured from real guests
(tests/fixtures/rdma-*.log, see docs/rdma-userspace.md)."""

import json
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import rdma_userspace as ru  # noqa: E402
from exitcodes import EXIT_OK, EXIT_RUN, EXIT_SETUP, EXIT_TESTS_FAILED  # noqa: E402

FIXTURES = VM_DIR / "tests" / "fixtures"
RUN = VM_DIR / "run"


def fixture(name):
    return (FIXTURES / name).read_text(errors="replace")


class Devices(unittest.TestCase):
    def test_good_lists(self):
        self.assertEqual(ru.parse_devices("rxe0"), ["rxe0"])
        self.assertEqual(ru.parse_devices("pinlease_ib0,rxe0"), ["pinlease_ib0", "rxe0"])
        self.assertTrue(ru.pinlease_ib_device().endswith("0"))

    def test_bad_values_name_the_flag_and_value(self):
        for value, words in (("", ["empty device name", "''"]),
                             ("rxe0,,pinlease_ib0", ["empty device name",
                                                     "'rxe0,,pinlease_ib0'"]),
                             ("rxe0;reboot", ["bad device name", "'rxe0;reboot'"]),
                             ("a" * 64, ["bad device name", "a" * 64]),
                             ("rxe0,rxe0", ["named twice", "'rxe0'"]),
                             ("rxe0,rxe1", ["2 rxe devices", "'rxe0,rxe1'"])):
            with self.subTest(value=value):
                with self.assertRaises(ru.ArgError) as cm:
                    ru.parse_devices(value)
                for w in ["--rdma-tests", *words]:
                    self.assertIn(w, str(cm.exception))

    def test_run_refuses_bad_values_and_clashes(self):
        for args, words in ((["--rdma-tests", "rxe0,,x"], ["--rdma-tests", "'rxe0,,x'"]),
                            (["--rdma-tests", "--bench"], ["--rdma-tests", "--bench"]),
                            (["--rdma-tests", "rxe0", "--exec", "/bin/true"],
                             ["--rdma-tests", "--exec"]),
                            (["--rdma-tests", "rxe0", "--cases", "x*"],
                             ["--rdma-tests", "--cases"])):
            with self.subTest(args=args):
                r = subprocess.run([sys.executable, str(RUN), *args], capture_output=True,
                                   text=True, timeout=60)
                self.assertEqual(r.returncode, EXIT_SETUP, r.stderr)
                for w in words:
                    self.assertIn(w, r.stderr)


class GuestScript(unittest.TestCase):
    def test_script_parses_and_names_each_device(self):
        script = ru.guest_script(["rxe0", ru.pinlease_ib_device()])
        sh = shutil.which("busybox")
        cmd = [sh, "sh", "-n"] if sh else ["sh", "-n"]
        with tempfile.NamedTemporaryFile("w", suffix=".sh") as f:
            f.write(script)
            f.flush()
            r = subprocess.run(cmd + [f.name], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("rdma link add rxe0 type rxe netdev dummy0", script)
        self.assertNotIn("rdma link add pinlease", script, "only rxeN is made by the guest")
        for dev in ("rxe0", ru.pinlease_ib_device()):
            self.assertIn(f"python3 run_tests.py --dev {dev} -v "
                          + " ".join(ru.PYVERBS_TESTS), script)
            self.assertIn(f"ibv_devinfo -v -d {dev}", script)

    def test_markers_of_the_script_are_those_the_parser_reads(self):
        # A step framed the way the script frames it is parsed back.
        text = "\n".join([f"{ru.MARK} INFO rxe0 gid_index=3", f"{ru.MARK} BEGIN rxe0 x",
                          "out", f"{ru.MARK} END rxe0 x rc=0 seconds=1.50"])
        d = ru.parse_console(text)
        self.assertEqual(d["rxe0"]["info"], {"gid_index": "3"})
        step = d["rxe0"]["steps"]["x"]
        self.assertEqual((step.lines, step.rc, step.seconds), (["out"], 0, 1.5))
        script = ru.guest_script(["rxe0"])
        self.assertIn(f'echo "{ru.MARK} BEGIN $dev $name"', script)
        self.assertIn(f'echo "{ru.MARK} END $dev $name rc=$rc seconds=', script)


class ModuleOrder(unittest.TestCase):
    def test_dependencies_first(self):
        deps = {"a.ko": ["b.ko", "c.ko"], "b.ko": ["c.ko"], "c.ko": [], "d.ko": ["c.ko"]}
        self.assertEqual(ru.module_order(deps, ["a.ko", "d.ko"]),
                         ["c.ko", "b.ko", "a.ko", "d.ko"])

    def test_loop_is_named(self):
        with self.assertRaises(ru.initramfs.ImageError) as cm:
            ru.module_order({"a.ko": ["b.ko"], "b.ko": ["a.ko"]}, ["a.ko"])
        self.assertIn("loop", str(cm.exception))

    def test_module_base(self):
        self.assertEqual(ru.module_base("kernel/drivers/infiniband/core/ib_core.ko.xz"),
                         "ib_core")
        self.assertEqual(ru.module_base("kernel/fs/configfs/configfs.ko"), "configfs")


class Payload(unittest.TestCase):
    def test_missing_host_file_names_file_and_package(self):
        real = ru.hostdeps.RDMA_USERSPACE_FILES
        ru.hostdeps.RDMA_USERSPACE_FILES = ((Path("/nonexistent/ib_write_bw"), "perftest"),)
        try:
            with self.assertRaises(ru.initramfs.ImageError) as cm:
                ru.payload(None)
        finally:
            ru.hostdeps.RDMA_USERSPACE_FILES = real
        self.assertIn("/nonexistent/ib_write_bw (perftest)", str(cm.exception))
        self.assertIn("scripts/install-host-deps", str(cm.exception))

    def test_the_packages_are_host_deps(self):
        for path, pkg in ru.hostdeps.RDMA_USERSPACE_FILES:
            self.assertIn((path, pkg), ru.hostdeps.HOST_FILES)


class Parsers(unittest.TestCase):
    def test_unittest_lines_docstrings_interleaved_output_and_details(self):
        lines = [
            "test_a (tests.test_x.T.test_a) ... ok",
            "test_b (tests.test_x.T.test_b)",
            "Docstring of b ... skipped 'Not supported'",
            "test_c (tests.test_x.T.test_c) ... some output of the test",
            "FAIL",
            "test_d (tests.test_x.T.test_d) ... ERROR",
            "setUpClass (tests.test_x.U) ... skipped \"class skip\"",
            "=" * 70,
            "ERROR: test_d (tests.test_x.T.test_d)",
            "-" * 70,
            "Traceback (most recent call last):",
            "  File \"x.py\", line 1, in test_d",
            "pyverbs.pyverbs_error.PyverbsRDMAError: Failed to create QP. Errno: 95",
            "",
            "=" * 70,
            "FAIL: test_c (tests.test_x.T.test_c)",
            "-" * 70,
            "AssertionError: 1 != 2",
            "-" * 70,
            "Ran 5 tests in 1.250s",
            "",
            "FAILED (failures=1, errors=1, skipped=2)",
        ]
        tests, summary = ru.parse_unittest(lines)
        got = {t["test"]: (t["result"], t["reason"]) for t in tests}
        self.assertEqual(got, {
            "tests.test_x.T.test_a": ("passed", ""),
            "tests.test_x.T.test_b": ("skipped", "Not supported"),
            "tests.test_x.T.test_c": ("failed", "AssertionError: 1 != 2"),
            "tests.test_x.T.test_d": ("error", "pyverbs.pyverbs_error.PyverbsRDMAError: "
                                      "Failed to create QP. Errno: 95"),
            "tests.test_x.U.setUpClass": ("skipped", "class skip"),
        })
        self.assertEqual(summary, {"ran": 5, "seconds": 1.25, "verdict": "FAILED",
                                   "failures": 1, "errors": 1, "skipped": 2})

    def test_kernel_message_inside_a_result_line(self):
        # Seen on 6.12 (console.log of a real run).
        tests, _ = ru.parse_unittest([
            "test_m (tests.test_rdmacm.CMTestCase.test_m) ... [   39.317962] dummy0 speed is "
            "unknown, defaulting to 1000",
            "skipped \"Device rxe0 doesn't have net interface\"[   39.377079] dummy0 speed is "
            "unknown, defaulting to 1000"])
        self.assertEqual(tests, [{"test": "tests.test_rdmacm.CMTestCase.test_m",
                                  "result": "skipped",
                                  "reason": "Device rxe0 doesn't have net interface"}])

    def test_perftest_tables(self):
        bw = [" #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]",
              " 65536      1000             112.35             110.02               0.001760"]
        self.assertEqual(ru.parse_perftest(bw), {
            "#bytes": 65536.0, "#iterations": 1000.0, "BW peak[MB/sec]": 112.35,
            "BW average[MB/sec]": 110.02, "MsgRate[Mpps]": 0.00176})
        lat = [" #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    "
               "t_avg[usec]    t_stdev[usec]   99% percentile[usec]   99.9% percentile[usec] ",
               " 2       1000          20.10          300.5        25.00             "
               "26.00          5.00            40.00                  300.50"]
        got = ru.parse_perftest(lat)
        self.assertEqual(got["99.9% percentile[usec]"], 300.5)
        self.assertEqual(got["t_typical[usec]"], 25.0)
        self.assertEqual(len(got), 9)
        self.assertEqual(ru.parse_perftest(["Couldn't connect to 127.0.0.1:18515"]), {})

    def test_perftest_row_after_kernel_messages(self):
        # rxe0's ib_send_bw client on 6.12 (/tmp/vt-612): the clocksource
        # watchdog's six lines came between the header and the row.
        clock = "[   19.882146] clocksource: timekeeping watchdog on CPU1: Marking clocksource"
        lines = [" #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   "
                 "MsgRate[Mpps]"] + [clock] * 5 + [
            "[   19.893193] TSC found unstable after boot, most likely due to broken BIOS.",
            " 65536      1000             21.57              20.64  \t\t   0.000330",
            "---------------------------------------------------------------------------"]
        self.assertEqual(ru.parse_perftest(lines), {
            "#bytes": 65536.0, "#iterations": 1000.0, "BW peak[MB/sec]": 21.57,
            "BW average[MB/sec]": 20.64, "MsgRate[Mpps]": 0.00033})

    def test_pingpong(self):
        self.assertEqual(ru.parse_pingpong([
            "  local address:  LID 0x0000, QPN 0x000011, PSN 0x2c7a1b, GID ::ffff:192.0.2.1",
            "8192000 bytes in 0.50 seconds = 131.07 Mbit/sec",
            "1000 iters in 0.50 seconds = 500.00 usec/iter"]),
            {"bytes": 8192000, "Mbit/sec": 131.07, "iters": 1000, "usec/iter": 500.0})


class CapturedConsoles(unittest.TestCase):
    """tests/fixtures/rdma-<device>-<kernel>.log: console.log of real
    `run --rdma-tests` guests (TCG), cut to the script's part."""

    def logs(self):
        logs = sorted(FIXTURES.glob("rdma-*.log"))
        self.assertTrue(logs, f"no rdma-*.log in {FIXTURES}")
        return logs

    def test_every_step_parsed(self):
        for log in self.logs():
            with self.subTest(log=log.name):
                text = log.read_text(errors="replace")
                dev = log.name.split("-")[1]
                r = ru.judge_device(dev, ru.parse_console(text)[dev])
                steps = {s["step"]: s for s in r["steps"]}
                self.assertEqual(list(steps), ["ibv_devices", "ibv_devinfo", "rc_pingpong",
                                               *[n for n, _, _ in ru.PERFTEST], "pyverbs"])
                for name in ("ibv_devices", "ibv_devinfo", "rc_pingpong",
                             *[n for n, _, _ in ru.PERFTEST]):
                    self.assertEqual(steps[name]["result"], "passed", steps[name])
                self.assertEqual(set(steps["rc_pingpong"]["figures"]),
                                 {"bytes", "Mbit/sec", "iters", "usec/iter"})
                self.assertIn("BW average[MB/sec]", steps["ib_write_bw"]["figures"])
                self.assertIn("BW average[MB/sec]", steps["ib_send_bw"]["figures"])
                self.assertIn("t_typical[usec]", steps["ib_read_lat"]["figures"])
                self.assertTrue(steps["ibv_devinfo"]["figures"]["state"].startswith(
                    "PORT_ACTIVE"))
                # Every test's line parsed: as many results as unittest ran,
                # and the skipped count it printed.
                py = r["pyverbs"]
                self.assertEqual(len(py["tests"]), py["summary"]["ran"])
                self.assertEqual(py["counts"]["skipped"], py["summary"].get("skipped", 0))
                self.assertEqual(py["counts"]["failed"], py["summary"].get("failures", 0))
                self.assertEqual(py["counts"]["error"], py["summary"].get("errors", 0))
                self.assertTrue(all(t["reason"] for t in py["tests"]
                                    if t["result"] != "passed"), "every skip has its reason")
                ran = re.search(r"^Ran (\d+) tests", text, re.M)
                self.assertEqual(py["summary"]["ran"], int(ran.group(1)))

    def test_cut_console_is_a_failure_not_a_pass(self):
        # The guest stopped during the pyverbs step: no END line.
        log = self.logs()[0]
        dev = log.name.split("-")[1]
        text = log.read_text(errors="replace")
        cut = text[:text.index(f"{ru.MARK} END {dev} pyverbs")]
        r = ru.judge_device(dev, ru.parse_console(cut)[dev])
        py = [s for s in r["steps"] if s["step"] == "pyverbs"][0]
        self.assertEqual(py["result"], "failed")
        self.assertIn("no END line", py["reason"])


class Verdicts(unittest.TestCase):
    def finish(self, text, code=EXIT_OK, devices=("rxe0",)):
        out = Path(tempfile.mkdtemp())
        (out / "console.log").write_text(text)
        said = []
        rc = ru.finish(out, code, list(devices), {"kernel": "k"}, said.append)
        return rc, out, said

    def test_missing_device_fails_and_is_named(self):
        dev = ru.pinlease_ib_device()
        rc, out, _ = self.finish(f"{ru.MARK} INFO {dev} missing=no /sys/class/infiniband/"
                                 f"{dev} (devices: rxe0 )\n", devices=(dev,))
        self.assertEqual(rc, EXIT_TESTS_FAILED)
        r = json.loads((out / "rdma" / f"{dev}.json").read_text())
        self.assertEqual(r["steps"][0]["result"], "failed")
        self.assertIn(f"no /sys/class/infiniband/{dev}", r["steps"][0]["reason"])

    def test_no_output_at_all_is_not_a_pass(self):
        rc, out, _ = self.finish("")
        self.assertEqual(rc, EXIT_TESTS_FAILED)
        r = json.loads((out / "rdma" / "rxe0.json").read_text())
        self.assertTrue(all(s["result"] == "failed" and s["reason"] == "not run"
                            for s in r["steps"]))

    def test_sigkill_named_oom_or_timeout(self):
        oom = ru.Step("pyverbs")
        oom.rc, oom.seconds = 137, 8.5
        oom.lines = ["[   29.8] Out of memory: Killed process 271 (python3) total-vm:147140kB"]
        self.assertIn("OOM killer: Out of memory: Killed process 271 (python3)", ru._ran(oom))
        slow = ru.Step("pyverbs")
        slow.rc, slow.seconds = 137, float(ru.STEP_TIMEOUT["pyverbs"])
        self.assertEqual(ru._ran(slow),
                         f"killed by the step's timeout ({ru.STEP_TIMEOUT['pyverbs']} s)")

    def test_run_failure_code_is_kept(self):
        rc, _, _ = self.finish("", code=EXIT_RUN)
        self.assertEqual(rc, EXIT_RUN)


if __name__ == "__main__":
    unittest.main()
