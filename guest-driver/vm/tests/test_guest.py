"""Host tests of guest-driver/vm/guest.py and faultrun.py (no QEMU): the
run's settings for /init, the output directory, the verdict lines, a crash's
end, and a --faults run's plan files and invariants.json."""

import json
import re
import sys
import tempfile
import types
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import console  # noqa: E402
import faultrun  # noqa: E402
import guest  # noqa: E402
import invariants  # noqa: E402
import ktap  # noqa: E402
from exitcodes import EXIT_OK, EXIT_RUN, EXIT_TESTS_FAILED  # noqa: E402
import markers  # noqa: E402

INV = markers.INVARIANT

PLAN = VM_DIR.parent / "campaigns" / "abort.toml"


def args(**kw):
    a = dict(keep=False, exec_script=None, no_device=False, console_loglevel=5, out=None,
             faults=None, seed=None, cases=None, scrub_period_ms=20, bench=False,
             bench_seconds=None, bench_max_mib=None)
    a.update(kw)
    return types.SimpleNamespace(**a)


BENCH = args(bench=True, bench_seconds=0.5, bench_max_mib=128)


class RunConf(unittest.TestCase):
    def test_modes(self):
        for want, a in (("suite", args()), ("nodevice", args(no_device=True)),
                        ("exec", args(exec_script=Path("x.sh"))), ("keep", args(keep=True)),
                        ("bench", BENCH)):
            conf = guest.run_conf(a, ["xfs"], set(), "*", None)
            self.assertEqual(conf["MODE"], want)
            self.assertEqual(conf["CONSOLE_LOGLEVEL"], "" if want == "keep" else "5")

    def test_filesystems_and_modules(self):
        conf = guest.run_conf(args(), ["xfs", "ext4"], {"dax"}, "pin_*", None)
        self.assertEqual((conf["MODULES"], conf["CASES"]), ("xfs ext4", "pin_*"))
        self.assertEqual((conf["MOUNT_XFS"], conf["MOUNT_EXT4"], conf["MOUNT_DAX"]),
                         ("1", "1", "0"))
        self.assertEqual((conf["FAULTS"], conf["MODULE_PARAMS"]), ("0", ""))
        self.assertNotIn("HUNG_TASK_SECS", conf)

    def test_bench(self):
        conf = guest.run_conf(BENCH, ["xfs"], set(), "*", None, ["dummy", "rdma_rxe"])
        self.assertEqual((conf["BENCH_SECONDS"], conf["BENCH_MAX_MIB"], conf["BENCH_MODULES"]),
                         ("0.5", "128", "dummy rdma_rxe"))
        self.assertNotIn("BENCH_SECONDS", guest.run_conf(args(), [], set(), "*", None))

    def test_fault_run(self):
        out = Path(tempfile.mkdtemp(prefix="guest."))
        fr = faultrun.FaultRun(args(faults=PLAN), out)
        conf = guest.run_conf(args(faults=PLAN), [], set(), fr.cases, fr)
        self.assertEqual((conf["FAULTS"], conf["HUNG_TASK_SECS"]), ("1", "10"))
        self.assertEqual(conf["FUZZ_SEED"], str(fr.seed))
        self.assertEqual(conf["MODULE_PARAMS"], "req_timeout_ms=1000")

    def test_init_sh_reads_every_key(self):
        # run.conf is written here and sourced by init.sh: a key written but
        # never read (or renamed on one side) is a setting that does nothing.
        init = (VM_DIR / "init.sh").read_text()
        fr = faultrun.FaultRun(args(faults=PLAN), Path(tempfile.mkdtemp(prefix="guest.")))
        conf = guest.run_conf(args(faults=PLAN), ["xfs"], set(), fr.cases, fr)
        conf.update(guest.run_conf(BENCH, ["xfs"], set(), "*", None, ["dummy"]))
        for key in conf:
            self.assertTrue(re.search(rf"\$\{{?{key}\b", init), f"init.sh never reads run.conf's {key}")


class Out(unittest.TestCase):
    def test_stale_outputs_go(self):
        out = Path(tempfile.mkdtemp(prefix="guest."))
        for name in ("status.json", "status-a.json", "status-a.txt", "crash.txt", "bench.txt",
                     "bench.json",
                     "daemon.log", "qemu.log"):
            (out / name).write_text("old")
        self.assertEqual(guest.fresh_out(args(out=out)), out)
        self.assertEqual(sorted(p.name for p in out.iterdir()), ["daemon.log", "qemu.log"])
        guest.fresh_out(args(out=out, no_device=True))
        self.assertEqual(sorted(p.name for p in out.iterdir()), ["qemu.log"])


class Verdict(unittest.TestCase):
    def test_judge(self):
        out = Path("OUT")
        good = ktap.parse("KTAP version 1\n1..1\nok 1 a\n")
        self.assertEqual(guest.judge(None, good, 0, out), EXIT_OK)
        self.assertEqual(guest.judge(None, good, 1, out), EXIT_TESTS_FAILED)
        self.assertEqual(guest.judge(Path("x.sh"), ktap.Ktap(), 0, out), EXIT_OK)

    def test_crash_fail_writes_crash_txt(self):
        out = Path(tempfile.mkdtemp(prefix="guest."))
        k, crash = ktap.Ktap(), console.CrashWatch()
        for line in ("KTAP version 1", "1..2", "# running 2 lease_take"):
            k.feed(line)
        for line in ("[ 1.000000] BUG: kernel NULL pointer dereference, address: 0",
                     "[ 1.000000] RIP: 0010:0x0", "[ 1.000000] ---[ end trace 0 ]---"):
            crash.feed(line, k)
        fail = guest.crash_fail(crash, out)
        self.assertEqual(fail.code, EXIT_RUN)
        self.assertIn("guest kernel crash during case 2 of 2: lease_take: BUG: kernel NULL",
                      str(fail))
        self.assertTrue((out / "crash.txt").read_text().startswith(
            "running: case 2 of 2: lease_take\n[ 1.000000] BUG: "))


class FaultRun(unittest.TestCase):
    def test_prepare_and_judge(self):
        out = Path(tempfile.mkdtemp(prefix="guest."))
        a = args(faults=PLAN, seed="3")
        fr = faultrun.FaultRun(a, out)
        self.assertEqual((fr.seed, fr.cases), (3, "campaign_lease_*"))
        fr.prepare(out)
        self.assertIn("seed = 3", (out / "faults.toml").read_text())
        self.assertEqual(json.loads((out / "guest-params.json").read_text())["params"],
                         {"req_timeout_ms": 1000})
        self.assertEqual(fr.reproduce(a), f"guest-driver/vm/run --faults {PLAN.resolve()} "
                         "--seed 3 --cases 'campaign_lease_*'")
        for name in invariants.GUEST_INVARIANTS:
            fr.watch.feed(f"{INV} {name} ok fine")
        fr.guest_finished = True
        (out / "status-final.json").write_text(json.dumps({"faults": {"rules": [
            {"id": 1, "point": "lease-break", "action": "abort", "hits": 2, "fires": 0}]}}))
        k = ktap.parse("KTAP version 1\n1..1\nok 1 campaign_lease_a\n")
        self.assertEqual(faultrun.finish_fault_run(fr, a, k, out, 12.3), EXIT_OK)
        result = json.loads((out / "invariants.json").read_text())
        self.assertEqual((result["verdict"], result["exit_code"], result["seed"]), ("ok", 0, 3))
        self.assertEqual(result["daemon_faults"]["rules"][0]["hits"], 2)
        self.assertEqual(result["case_counts"],
                         {"passed": 1, "skipped": 0, "failed": 0, "planned": 1})


if __name__ == "__main__":
    unittest.main()
