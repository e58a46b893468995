"""One guest run: the run's settings for /init (run.conf), the accelerator,
QEMU with the console on a pipe (KTAP streamed and judged, status snapshots
at the guest's markers), and how a run ends early: a kernel crash, a
timeout, QEMU or the daemon dying, and under --faults a stalled boot, a
hung task or a planned abort.

Python 3 standard library only.
"""

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import console
import markers
import progress
import qemu
from daemon import take_status, take_status_text
from exitcodes import EXIT_OK, EXIT_RUN, Fail, setup_error
from faultrun import finish_fault_run, say_abort_report
from ktap import KTAP_RUNNING, Ktap, judge_exec, judge_suite
from procs import describe_exit, stop, tail
from progress import say

# --faults: after a planned abort the guest gets this long to finish its
# checks (its requests fail by req_timeout_ms) before QEMU is stopped.
ABORT_GRACE = 60.0
# --faults: once the console shows a hung task (already a violation) the
# guest gets this long to finish before QEMU is stopped, instead of the
# whole --timeout.
HUNG_GRACE = 60.0
# --faults: a guest that has not reached /init this long after QEMU started
# is stalled in boot (seen here under TCG on an overloaded host: RCU stalls
# before /init). No pinlease fault point is reached before /init loads the
# module, so vm/campaign retries such a run once.
BOOT_LIMIT = 120.0
ACK_LINE = f"{markers.HOST_ACK}\n".encode()  # answer to a snapshot request
# After the first line of a kernel crash (Oops, BUG, panic) the run ends once
# the kernel's report is complete ("---[ end trace"), or this long after it:
# what follows a crash is a hang or more noise, not the suite's verdict.
CRASH_GRACE = 5.0


def run_conf(a, load, lost, cases, fault_run, bench_load=()):
    """/etc/pinlease/run.conf, which /init sources: the run's choices."""
    mode = ("keep" if a.keep else "exec" if a.exec_script
            else "nodevice" if a.no_device else "bench" if a.bench else "suite")
    conf = {
        "MODE": mode,
        "CASES": cases,
        "MODULES": " ".join(load),
        "MOUNT_XFS": "0" if "xfs" in lost else "1",
        "MOUNT_EXT4": "0" if "ext4" in lost else "1",
        "MOUNT_DAX": "0" if "dax" in lost else "1",
        "CONSOLE_LOGLEVEL": "" if a.keep else str(a.console_loglevel),
        "MODULE_PARAMS": "",
        "FAULTS": "0",
    }
    if a.bench:
        conf.update({"BENCH_SECONDS": f"{a.bench_seconds:g}", "BENCH_MAX_MIB": str(a.bench_max_mib),
                     "BENCH_MODULES": " ".join(bench_load)})
    if fault_run is not None:
        conf.update(fault_run.run_conf())
    return conf


def fresh_out(a):
    """The output directory, without the files a run writes that an earlier
    run left there (they would mislead)."""
    if a.out:
        out = a.out.resolve()
        out.mkdir(parents=True, exist_ok=True)
    else:
        out = Path(tempfile.mkdtemp(prefix="pinlease-run."))
    for stale in ("status.json", "results.ktap", "console.log", "commands.txt",
                  "invariants.json", "abort-report.json", "crash.txt", "bench.txt", "bench.json"):
        (out / stale).unlink(missing_ok=True)
    for stale in [*out.glob("status-*.json"), *out.glob("status-*.txt")]:
        stale.unlink(missing_ok=True)
    say(f"output directory: {out}")
    if a.no_device:
        # No daemon this run: an old daemon.log would mislead (status.json went above).
        (out / "daemon.log").unlink(missing_ok=True)
    return out


def pick_mode(a, steps, vmm, daemon_bin, out):
    """The device's attachment mode (qemu.pick_mode probes it), or None
    for --no-device."""
    if a.no_device:
        runs = ("a shell" if a.keep else "the --exec script" if a.exec_script
                else "`pinlease-guest nodevice`")
        say(f"no pinlease device (--no-device): no daemon; /init runs {runs}")
        return None
    try:
        return steps.timed("mode probe", qemu.pick_mode, a.mode, vmm, daemon_bin, out / "probe",
                           say)
    except qemu.QemuError as e:
        raise setup_error(str(e)) from None


def pick_accel(requested, steps, vmm, k, initramfs_path, out):
    """The accelerator: --accel as given, or for auto KVM when /dev/kvm
    exists and a probe boot with it reaches /init, else TCG."""
    if requested != "auto":
        say(f"accel: {requested}")
        return requested
    if not os.path.exists("/dev/kvm"):
        say("accel: tcg (no /dev/kvm)")
        return "tcg"
    ok, why, log = steps.timed("KVM probe", qemu.probe_kvm, vmm, k, initramfs_path, out)
    accel = "kvm" if ok else "tcg"
    say(f"accel: {accel}" + ("" if ok else f" (KVM probe failed: {why}; see {log})"))
    return accel


def answer_guest(vm):
    """Sends the line the guest waits for after a sentinel or snapshot."""
    try:
        vm.stdin.write(ACK_LINE)
        vm.stdin.flush()
    except OSError:
        pass


def run_guest(a, cmd, daemon, daemon_bin, admin, out, steps, fr=None):
    """Runs QEMU with the console on a pipe; returns the exit code. With a
    FaultRun (--faults) the run is judged by finish_fault_run instead."""
    steps.record(cmd)
    qlog = open(out / "qemu.log", "wb")
    console_log = open(out / "console.log", "wb")
    vm = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=qlog,
                          start_new_session=True)
    t_start = time.monotonic()
    say(f"QEMU started (pid {vm.pid}); console: {out}/console.log")
    ktap = Ktap()
    crash = console.CrashWatch()
    crash_deadline = None  # a kernel crash seen: the run ends by then
    streaming = False  # exec mode: stream everything after RUN-START
    sentinel_rc = None
    t_init = t_sentinel = None
    reader = console.LineReader()
    daemon_death = None
    fail = None
    abort_deadline = None  # --faults: planned abort seen, guest gets ABORT_GRACE
    hung_deadline = None  # --faults: hung task seen, guest gets HUNG_GRACE
    sel = selectors.DefaultSelector()
    sel.register(vm.stdout, selectors.EVENT_READ)
    boot_beat = progress.Ticker()  # until /init: a line now and then, not silence
    last_console = ""
    try:
        eof = False
        while not eof:
            left = t_start + a.timeout - time.monotonic()
            if t_init is None and boot_beat.due():
                say(boot_wait_line(time.monotonic() - t_start, last_console))
            if (abort_deadline is not None and sentinel_rc is None
                    and time.monotonic() > abort_deadline):
                fail = Fail(f"the guest did not finish within {ABORT_GRACE:.0f} s of the planned "
                            "abort", EXIT_RUN)
                break
            if fr is not None and t_init is None and time.monotonic() - t_start > BOOT_LIMIT:
                fail = Fail(f"the guest did not reach /init within {BOOT_LIMIT:.0f} s of QEMU's "
                            "start (a boot stall, before any fault point)", EXIT_RUN)
                break
            if fr is not None and fr.watch.hung and sentinel_rc is None:
                if hung_deadline is None:
                    hung_deadline = time.monotonic() + HUNG_GRACE
                    say(f"hung task on the console; the guest gets {HUNG_GRACE:.0f} s to finish")
                elif time.monotonic() > hung_deadline:
                    fail = Fail(f"the guest did not finish within {HUNG_GRACE:.0f} s of a hung "
                                "task report", EXIT_RUN)
                    break
            if crash_deadline is not None and (crash.complete
                                               or time.monotonic() > crash_deadline):
                fail = crash_fail(crash, out)
                break
            if left <= 0 and sentinel_rc is None:
                last = ktap.lines[-1] if ktap.lines else "(no KTAP yet)"
                fail = Fail(f"timeout: no exit sentinel within --timeout {a.timeout:.0f} s; "
                            f"last KTAP line: {last!r}; console tail:\n  "
                            f"{tail(out / 'console.log', 5)}", EXIT_RUN)
                # What the device holds while the guest is stuck.
                if daemon is not None and daemon.poll() is None:
                    take_status(daemon_bin, admin, out)
                break
            if left <= -30:  # after the sentinel QEMU gets 30 s to power off
                say("WARNING: QEMU did not exit 30 s after the suite ended; stopping it")
                break
            if sel.select(timeout=0.5):
                chunk = os.read(vm.stdout.fileno(), 65536)
                if not chunk:
                    eof = True
                console_log.write(chunk)
                console_log.flush()
                for line in reader.feed(chunk):
                    last_console = line or last_console
                    if sentinel_rc is None and (m := console.SENTINEL.search(line.rstrip())):
                        sentinel_rc = int(m.group(1))
                        t_sentinel = time.monotonic()
                        print(f"  {line}", flush=True)
                        # The guest waits for our answer before powering off,
                        # so the status shows the device as the suite left it.
                        if daemon is not None and daemon.poll() is None:
                            take_status(daemon_bin, admin, out)
                            if fr is not None:
                                # The fault counts as the run left them.
                                fr.status_taken = take_status(daemon_bin, admin, out,
                                                              "status-final.json")
                        answer_guest(vm)
                        continue
                    if sentinel_rc is None and (m := console.SNAPSHOT.search(line.rstrip())):
                        if daemon is not None:
                            take_status(daemon_bin, admin, out, f"status-{m.group(1)}.json")
                            take_status_text(daemon_bin, admin, out, f"status-{m.group(1)}.txt")
                        answer_guest(vm)
                    if crash.feed(line, ktap):
                        if crash_deadline is None:
                            crash_deadline = time.monotonic() + CRASH_GRACE
                            say(f"guest kernel crash during {crash.case}: {crash.title()}; the "
                                f"run ends when the report is complete, at most "
                                f"{CRASH_GRACE:.0f} s from now")
                        print(f"  [crash] {line}", flush=True)
                        if fr is not None:
                            fr.watch.feed(line)
                        continue
                    is_ktap = sentinel_rc is None and ktap.feed(line)
                    if is_ktap and KTAP_RUNNING.match(line) and not a.verbose:
                        continue  # in results.ktap and console.log, not on the terminal
                    if fr is not None and sentinel_rc is None and not is_ktap:
                        if line.startswith(f"{markers.DEBUGFS} "):
                            fr.debugfs.append(line[len(markers.DEBUGFS) + 1:])
                            continue
                        if fr.watch.feed(line):
                            print(f"  {line}", flush=True)
                            continue
                    if line.startswith(markers.INIT) and t_init is None:
                        t_init = time.monotonic()
                        up = line.partition("uptime=")[2]
                        say(f"guest reached /init {t_init - t_start:.1f} s after QEMU start"
                            + (f" (guest uptime {up} s)" if up else ""))
                    elif line.startswith(markers.RUN_START):
                        streaming = line.endswith(("exec", "bench"))
                        what = line.split()[-1]
                        say(f"running {what}" + (f" --cases '{a.cases}'" if what == "suite" else ""))
                    elif is_ktap or a.verbose or streaming or line.startswith("pinlease-init:"):
                        print(f"  {line}", flush=True)
                    elif console.KERNEL_WARNING.search(line):
                        print(f"  [console] {line}", flush=True)
            if daemon is not None and daemon.poll() is not None and daemon_death is None:
                daemon_death = daemon.returncode
                if (fr is not None and daemon_death == -signal.SIGABRT
                        and fr.abort_report.is_file()):
                    fr.planned_abort = True
                    abort_deadline = time.monotonic() + ABORT_GRACE
                    say_abort_report(fr.abort_report)
                    say(f"planned abort: the guest gets {ABORT_GRACE:.0f} s to finish its checks")
                elif sentinel_rc is None:
                    fail = Fail(f"pinlease serve died ({describe_exit(daemon.returncode)}) during the "
                                f"run; QEMU cannot continue without it. {out}/daemon.log:\n  "
                                f"{tail(out / 'daemon.log')}", EXIT_RUN)
                    break
            if vm.poll() is not None and not sel.select(timeout=0):
                break
    finally:
        sel.close()
        stop(vm, "QEMU")
        console_log.close()
        qlog.close()
    t_end = time.monotonic()

    (out / "results.ktap").write_text("".join(line + "\n" for line in ktap.lines))
    if fr is not None:
        fr.guest_finished = sentinel_rc is not None
        fr.reached_init = t_init is not None
        if fail is not None:
            fr.run_problem = str(fail).split("\n")[0]
        elif sentinel_rc is None:
            fr.run_problem = f"QEMU exited ({describe_exit(vm.returncode)}) without the exit sentinel"
        if daemon is not None:
            fr.daemon_rc = daemon.poll()
            if not fr.status_taken and fr.daemon_rc is None:
                fr.status_taken = take_status(daemon_bin, admin, out, "status-final.json")
        say(f"timing: QEMU run {t_end - t_start:.1f} s")
        return finish_fault_run(fr, a, ktap, out, t_end - t_start)
    if fail is None and sentinel_rc is None:
        if daemon is not None and daemon.poll() is not None:
            fail = Fail(f"pinlease serve died ({describe_exit(daemon.returncode)}), then QEMU "
                        f"exited; {out}/daemon.log:\n  {tail(out / 'daemon.log')}", EXIT_RUN)
        else:
            panic = "Kernel panic" in (out / "console.log").read_text(errors="replace")
            fail = Fail(f"QEMU exited ({describe_exit(vm.returncode)}) without the exit sentinel"
                        + (" after a guest kernel panic" if panic else "")
                        + f"; {out}/qemu.log:\n  {tail(out / 'qemu.log', 8)}\n"
                        f"console tail:\n  {tail(out / 'console.log', 8)}", EXIT_RUN)
    if daemon is not None and daemon.poll() is not None and daemon_death is None:
        daemon_death = daemon.returncode
    timing = [f"QEMU run {t_end - t_start:.1f} s"]
    if t_init:
        timing.append(f"boot to /init {t_init - t_start:.1f} s")
    if t_init and t_sentinel:
        timing.append(f"/init to exit sentinel {t_sentinel - t_init:.1f} s")
    say("timing: " + ", ".join(timing))
    if fail:
        raise fail
    if daemon_death is not None:
        raise Fail(f"pinlease serve exited ({describe_exit(daemon_death)}) while QEMU powered "
                   f"off; see {out}/daemon.log", EXIT_RUN)
    if a.bench:
        # The figures decide (bench.py); here only whether the programs ran.
        say(f"bench programs: /init reported exit {sentinel_rc}"
            + ("" if sentinel_rc == 0 else " (its pinlease-init lines above say which)"))
        return EXIT_OK if sentinel_rc == 0 else EXIT_RUN
    return judge(a.exec_script, ktap, sentinel_rc, out)


def boot_wait_line(seconds, last_console):
    """The heartbeat while the guest boots: how long, and the console's last line."""
    last = progress.shorten(console.PRINTK_PREFIX.sub("", last_console).strip())
    return (f"boot: {seconds:.0f} s since QEMU started, waiting for /init; "
            + (f"last console line: {last}" if last else "no console output yet"))


def judge(exec_script, k, rc, out):
    """Says the verdict on the guest's KTAP and exit code; returns the exit code."""
    code, lines = judge_exec(k, rc) if exec_script else judge_suite(k, rc, out / "results.ktap")
    for line in lines:
        say(line)
    return code


def crash_fail(crash, out):
    """The run's end after a guest kernel crash: OUT/crash.txt and the Fail."""
    report = "\n".join(crash.lines)
    (out / "crash.txt").write_text(f"running: {crash.case}\n{report}\n")
    return Fail(f"guest kernel crash during {crash.case}: {crash.title()}"
                + ("" if crash.complete else f" (report incomplete after {CRASH_GRACE:.0f} s)")
                + f"; the report is in {out}/crash.txt and console.log:\n  "
                + "\n  ".join(crash.summary()), EXIT_RUN)


def run_keep(cmd, steps):
    """--keep: QEMU with its console and monitor on this terminal."""
    steps.record(cmd)
    say("QEMU on this terminal: Ctrl-A x quits, Ctrl-A c the monitor; "
        "`poweroff -f` in the guest ends it")
    vm = subprocess.Popen(cmd, start_new_session=True)
    try:
        vm.wait()
    finally:
        stop(vm, "QEMU")
        if sys.stdin.isatty():
            subprocess.run(["stty", "sane"], stdin=sys.stdin)
    say(f"QEMU exited ({describe_exit(vm.returncode)})")
    return EXIT_OK if vm.returncode == 0 else EXIT_RUN
