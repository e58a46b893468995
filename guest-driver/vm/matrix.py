"""The kernel x QEMU x mode matrix (guest-driver/vm/matrix): which cells
exist, reading a cell's results, and the tables.

A cell is one `vm/run` of the suite: one guest kernel (--debian-kernel), one
QEMU (the host's, or the trixie rootfs's wrapper, or a path), one attachment
mode. Native mode needs vhost-user-test-device-pci, which QEMU lists from
10.2 on: a QEMU without it has no native cell (shown as n/a); a QEMU that
lists it but cannot start it fails its cell (vm/run's probe says why).

Python 3 standard library only.
"""

import json
import re
from pathlib import Path

import hostdeps
import ktap
import qemu

# The suite's pin-verdict cases print one line per verdict row
# (guest-driver/tools/src/verdicts.rs): "# CASE: verdict ROW RESULT expected EXPECTED".
VERDICT = re.compile(r"^# (\S+): verdict (\S+) (\S+) expected (\S+)$")
MODES = ("carrier", "native")
QEMU_NAMES = {"host": None, "trixie": str(hostdeps.TRIXIE_QEMU)}


class MatrixError(Exception):
    """A bad selection; the message names the value seen."""


class QemuChoice:
    """One QEMU of the matrix: its label and what vm/run gets as --qemu."""

    def __init__(self, name, path, version, devices):
        self.name, self.path, self.version, self.devices = name, path, version, devices

    def label(self):
        return f"QEMU {self.version}"


def parse_list(text, known, what):
    items = [x for x in re.split(r"[,\s]+", text or "") if x]
    if not items:
        raise MatrixError(f"--{what}: empty list")
    bad = [x for x in items if known is not None and x not in known]
    if bad:
        raise MatrixError(f"--{what}: unknown {', '.join(bad)} (known: {', '.join(known)})")
    return list(dict.fromkeys(items))


def resolve_qemus(names):
    """QemuChoice for each of host, trixie or a path (all must run)."""
    out = []
    for name in names:
        path = QEMU_NAMES.get(name, name)
        try:
            q = qemu.find(path)
        except qemu.QemuError as e:
            raise MatrixError(f"--qemus {name}: {e}") from None
        out.append(QemuChoice(name, path, q.version, q.devices))
    return out


class Cell:
    def __init__(self, kernel, q, mode):
        self.kernel, self.qemu, self.mode = kernel, q, mode
        self.na = None  # why this cell cannot exist, or None
        if mode == "native" and qemu.NATIVE_DEVICE not in q.devices:
            self.na = f"{q.label()} has no {qemu.NATIVE_DEVICE}"
        self.exit_code = None
        self.counts = None  # (passed, skipped, failed)
        self.failed = []
        self.skips = []
        self.verdicts = []  # (row, result, expected, case)
        self.release = None
        self.seconds = None
        self.problem = None

    def name(self):
        return f"{self.kernel}-{self.qemu.name}-{self.mode}"

    def passed(self):
        return self.na is not None or self.exit_code == 0


def cells(kernels, qemus, modes):
    return [Cell(k, q, m) for k in kernels for q in qemus for m in modes]


def read_results(cell, out):
    """Fills CELL from its run directory: KTAP counts, verdicts, release."""
    path = out / "results.ktap"
    text = path.read_text(errors="replace") if path.is_file() else ""
    for line in text.splitlines():
        v = VERDICT.match(line)
        if v:
            cell.verdicts.append((v.group(2), v.group(3), v.group(4), v.group(1)))
    results = ktap.parse(text)
    if results.started:
        passed, skipped, failed = results.counts()
        cell.counts = (passed, skipped, len(failed))
        cell.failed = failed
        cell.skips = results.skipped()
    con = out / "console.log"
    if con.is_file():
        m = re.search(r"Linux version (\S+)", con.read_text(errors="replace"))
        cell.release = m.group(1) if m else None


def accel_chosen(run_log):
    """The accelerator a vm/run chose ("accel: tcg (...)"), or None."""
    if not Path(run_log).is_file():
        return None
    m = re.search(r"\] accel: (kvm|tcg)\b", Path(run_log).read_text(errors="replace"))
    return m.group(1) if m else None


def cell_state(cell):
    if cell.na:
        return "n/a"
    if cell.exit_code is None:
        return "not run"
    return {0: "PASS", 1: "FAIL", 2: "SETUP", 3: "RUN-PROBLEM"}.get(cell.exit_code,
                                                                     f"exit {cell.exit_code}")


def cell_text(cell):
    state = cell_state(cell)
    if cell.na or cell.counts is None:
        return state
    p, s, f = cell.counts
    return f"{state} {p}/{s}/{f}"


def table(cells_):
    """Markdown: one row per kernel, one column per QEMU x mode; each cell
    'STATE passed/skipped/failed'."""
    kernels = list(dict.fromkeys(c.kernel for c in cells_))
    cols = list(dict.fromkeys((c.qemu.name, c.qemu.label(), c.mode) for c in cells_))
    head = ["kernel"] + [f"{label} {mode}" for _, label, mode in cols]
    rows = [head, ["---"] * len(head)]
    for k in kernels:
        rel = next((c.release for c in cells_ if c.kernel == k and c.release), None)
        row = [k + (f" ({rel})" if rel else "")]
        for qname, _, mode in cols:
            c = next(c for c in cells_ if c.kernel == k and c.qemu.name == qname and c.mode == mode)
            row.append(cell_text(c))
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def verdict_table(cells_):
    """Markdown: one row per verdict row id, one column per kernel; a cell is
    the result, marked when it is not what the suite expected or when the
    cells of one kernel disagree."""
    kernels = list(dict.fromkeys(c.kernel for c in cells_))
    by = {}
    rows = []
    for c in cells_:
        for row, result, expected, case in c.verdicts:
            if row not in rows:
                rows.append(row)
            by.setdefault((row, c.kernel), set()).add((result, expected, case))
    if not rows:
        return ""
    lines = ["| row | case | " + " | ".join(kernels) + " |",
             "|---|---|" + "---|" * len(kernels)]
    for row in rows:
        cases = sorted({case for (r, _), seen in by.items() if r == row for _, _, case in seen})
        cols = []
        for k in kernels:
            seen = by.get((row, k), set())
            if not seen:
                cols.append("")
                continue
            results = sorted({r for r, _, _ in seen})
            text = "/".join(results)
            bad = [(r, e) for r, e, _ in seen if r != e]
            if bad:
                text += " (expected " + "/".join(sorted({e for _, e in bad})) + ")"
            if len(results) > 1:
                text += " (cells disagree)"
            cols.append(text)
        lines.append(f"| {row} | {', '.join(cases)} | " + " | ".join(cols) + " |")
    return "\n".join(lines)


def summary_json(cells_, seconds):
    return json.dumps({
        "seconds": round(seconds, 1),
        "cells": [{
            "kernel": c.kernel, "release": c.release, "qemu": c.qemu.name,
            "qemu_version": c.qemu.version, "qemu_path": c.qemu.path, "mode": c.mode,
            "state": cell_state(c), "not_applicable": c.na, "exit_code": c.exit_code,
            "passed": c.counts[0] if c.counts else None,
            "skipped": c.counts[1] if c.counts else None,
            "failed": c.counts[2] if c.counts else None,
            "failed_cases": c.failed, "skips": c.skips, "problem": c.problem,
            "seconds": c.seconds,
            "verdicts": [{"row": r, "result": res, "expected": e, "case": case}
                         for r, res, e, case in c.verdicts],
        } for c in cells_]}, indent=2) + "\n"


def write_reports(out: Path, cells_, seconds):
    (out / "matrix.json").write_text(summary_json(cells_, seconds))
    md = ["# pinlease matrix", "", "Cells: STATE passed/skipped/failed.", "", table(cells_), ""]
    vt = verdict_table(cells_)
    if vt:
        md += ["## Pin verdicts per kernel", "", vt, ""]
    problems = [(c, x) for c in cells_ for x in ([c.problem] if c.problem else []) + c.failed]
    if problems:
        md += ["## Failures", ""] + [f"- {c.name()}: {x}" for c, x in problems] + [""]
    (out / "matrix.md").write_text("\n".join(md))
