"""Console markers, read from their one definition,
guest-driver/include/console_markers.sh (init.sh sources the same file and
the guest tool builds its constants from it).

Each PL_MARK_NAME=VALUE line becomes the module attribute NAME (the line
PL_MARK_SUITE_EXIT=PINLEASE-SUITE-EXIT gives markers.SUITE_EXIT). A marker this module names but
the file lacks fails at import, naming the file and the marker.
"""

import re
from pathlib import Path

FILE = Path(__file__).resolve().parents[1] / "include" / "console_markers.sh"
# The subset of sh all three readers accept (the file's header says so).
LINE = re.compile(r"^PL_MARK_([A-Z_]+)=([A-Za-z0-9_-]+)$")


class MarkerFileError(ValueError):
    """console_markers.sh has a line outside the format its header gives."""


def parse(text, where=FILE):
    """{NAME: VALUE} from the file's text; refuses anything but comments,
    blank lines and PL_MARK_NAME=VALUE."""
    out = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            raise MarkerFileError(f"{where}:{n}: not PL_MARK_NAME=VALUE: {raw!r}")
        if m.group(1) in out:
            raise MarkerFileError(f"{where}:{n}: PL_MARK_{m.group(1)} defined twice")
        out[m.group(1)] = m.group(2)
    return out


ALL = parse(FILE.read_text())


def _get(name):
    try:
        return ALL[name]
    except KeyError:
        raise MarkerFileError(f"{FILE}: no PL_MARK_{name} (the runner needs it)") from None


# The markers the runner names, each the module attribute of its name
# (markers.SUITE_EXIT); one the file lacks fails here, at import.
NEEDED = ("PREFIX", "INIT", "PROBE_OK", "RUN_START", "SUITE_EXIT", "INVARIANT",
          "MODULE_FAULT", "DEBUGFS", "STRAY", "STRAY_HIT", "SNAPSHOT", "HOST_ACK", "BENCH",
          "SOAK")
globals().update({name: _get(name) for name in NEEDED})
