"""The exit codes of vm/run, vm/matrix, vm/campaign and vm/soak: the one
definition.

The same four numbers mean the same kind of outcome in all of them, so a
script that calls another can pass its code on or rank it.

Python 3 standard library only.
"""

EXIT_OK = 0
# A `not ok`, a non-zero suite or --exec script rc, missing or garbled KTAP.
EXIT_TESTS_FAILED = 1
# Under --faults (and vm/campaign) code 1 means an invariant was violated:
# failed cases are only counted there (docs/faults.md section 3.2).
EXIT_VIOLATION = EXIT_TESTS_FAILED
# Usage, dependency, build or image problem (or a fault plan the daemon
# refused): nothing booted, or nothing worth judging did.
EXIT_SETUP = 2
# Guest kernel crash, timeout, no exit sentinel, QEMU or the daemon died.
EXIT_RUN = 3

# The meanings, as `vm/run --help` gives them.
RUN_HELP = f"""exit status:
  {EXIT_OK}  every case passed (or the --exec script exited 0; with --no-device:
     every no-device check passed)
  {EXIT_TESTS_FAILED}  a case failed (`not ok`), the suite or script exited non-zero,
     or the KTAP was missing or garbled
  {EXIT_SETUP}  setup problem before boot (usage, dependency, build, images)
  {EXIT_RUN}  run problem: a guest kernel crash (Oops, BUG, panic: the run ends
     within seconds, with the report and the case that was running, also
     in OUT/crash.txt), timeout, no exit sentinel, QEMU or the daemon died
with --faults the invariants decide (failed cases are only counted):
  {EXIT_OK}  every invariant holds (also after a planned daemon abort)
  {EXIT_VIOLATION}  an invariant was violated (plan, seed and reproduction printed; a
     kernel crash ends the run within seconds as kernel-warn violated)
  {EXIT_SETUP}  setup problem (bad plan or seed, the daemon refused the plan, build)
  {EXIT_RUN}  the guest did not finish, without a planned abort or a violation
"""


class Fail(Exception):
    """A run-ending problem: message for the user and the exit code."""

    def __init__(self, msg, code):
        super().__init__(msg)
        self.code = code


def setup_error(msg):
    return Fail(msg, EXIT_SETUP)
