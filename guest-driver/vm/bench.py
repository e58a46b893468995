"""`run --bench`: the guest benchmark's figures, read from the console.

`pinlease-guest bench` (pinlease, memcpy and barepin sides) and ibv-bench
(the rxe side: libibverbs on rdma_rxe, guest-driver/bench/ibv_bench.c)
print one line per figure and side,

    PINLEASE-BENCH SIDE ID VALUE [KEY=VALUE ...]

This module reads the figures' one definition,
guest-driver/include/bench_figures.txt (its only reader in Python), pairs
the lines by id, prints the table (each side's value, pinlease's ratio to
it, the targets' PASS/MISS) and writes OUT/bench.txt and OUT/bench.json.
PASS/MISS never decides the exit code: the run fails only when a program
failed or a figure's side printed nothing (CI's smoke test).

Python 3 standard library only.
"""

import json
import os
import re
from pathlib import Path

import markers
from exitcodes import EXIT_OK, EXIT_RUN

FIGURES_FILE = Path(__file__).resolve().parents[1] / "include" / "bench_figures.txt"
BETTER = ("higher", "lower")
TARGET = re.compile(r"^([a-z]+)(>=|<=)(\d+(?:\.\d+)?)$")
NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?$")
# The side every ratio has in its numerator; the other sides are the ones
# the file lists.
REFERENCE = "pinlease"


class FiguresError(ValueError):
    """bench_figures.txt has a line outside its format; names file and line."""


class BenchLineError(ValueError):
    """A PINLEASE-BENCH line the figures do not allow; names what and why."""


class Figure:
    def __init__(self, fid, unit, better, sides, targets):
        self.id, self.unit, self.better = fid, unit, better
        self.sides = sides  # tuple, pinlease first
        self.targets = targets  # [(side, op, x)]


def parse_figures(text, where=FIGURES_FILE):
    """[Figure] in file order from bench_figures.txt's text."""
    figures, seen = [], set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cols = line.split()
        if len(cols) != 5:
            raise FiguresError(f"{where}:{n}: want ID UNIT BETTER SIDES TARGETS, got {raw!r}")
        fid, unit, better, sides_col, targets_col = cols
        if fid in seen:
            raise FiguresError(f"{where}:{n}: figure {fid} defined twice")
        if better not in BETTER:
            raise FiguresError(f"{where}:{n}: {fid}: BETTER is {better!r}, want "
                               f"{' or '.join(BETTER)}")
        sides = tuple(sides_col.split(","))
        if sides[0] != REFERENCE or len(set(sides)) != len(sides):
            raise FiguresError(f"{where}:{n}: {fid}: SIDES {sides_col!r} must start with "
                               f"{REFERENCE} and name each side once")
        targets = []
        for t in ([] if targets_col == "-" else targets_col.split(",")):
            m = TARGET.match(t)
            if not m:
                raise FiguresError(f"{where}:{n}: {fid}: target {t!r} is not SIDE>=X or SIDE<=X")
            side, op, x = m.group(1), m.group(2), float(m.group(3))
            if side not in sides[1:]:
                raise FiguresError(f"{where}:{n}: {fid}: target {t!r} names side {side}, "
                                   f"which the figure does not measure (SIDES {sides_col})")
            # A ratio pinlease/side: a rate should be at least X times the
            # other's, a time at most X times: the other way asks for worse.
            if (op == ">=") != (better == "higher"):
                raise FiguresError(f"{where}:{n}: {fid}: target {t!r} points the wrong way "
                                   f"for a figure where {better} is better")
            targets.append((side, op, x))
        seen.add(fid)
        figures.append(Figure(fid, unit, better, sides, targets))
    if not figures:
        raise FiguresError(f"{where}: no figures")
    return figures


# The table's column order; a side the file adds later comes after these.
COLUMNS = ("pinlease", "rxe", "memcpy", "barepin")


def all_sides(figures):
    """Every side some figure lists, in COLUMNS order, then in file order."""
    out = []
    for f in figures:
        out.extend(s for s in f.sides if s not in out)
    return sorted(out, key=lambda s: (COLUMNS.index(s) if s in COLUMNS else len(COLUMNS),
                                      out.index(s)))


def parse_line(line, figures_by_id):
    """(side, id, value, {key: value}) of a PINLEASE-BENCH line; raises
    BenchLineError naming an unknown id or side, or a bad value."""
    words = line.split()
    if len(words) < 4 or words[0] != markers.BENCH:
        raise BenchLineError(f"not '{markers.BENCH} SIDE ID VALUE [KEY=VALUE ...]': {line!r}")
    side, fid, value = words[1:4]
    fig = figures_by_id.get(fid)
    if fig is None:
        raise BenchLineError(f"unknown figure id {fid!r} (not in {FIGURES_FILE.name}): {line!r}")
    if side not in fig.sides:
        raise BenchLineError(f"figure {fid} has no side {side!r} (its sides: "
                             f"{', '.join(fig.sides)}): {line!r}")
    if not NUMBER.match(value):
        raise BenchLineError(f"{side} {fid}: value {value!r} is not a decimal number: {line!r}")
    details = {}
    for kv in words[4:]:
        key, eq, val = kv.partition("=")
        if not eq or not key:
            raise BenchLineError(f"{side} {fid}: {kv!r} is not KEY=VALUE: {line!r}")
        details[key] = val
    return side, fid, float(value), details


class Report:
    """The figures of one run: values by (id, side), ratios, verdicts, and
    what is missing or was refused."""

    def __init__(self, figures):
        self.figures = figures
        self.values = {}  # (id, side) -> value
        self.details = {}  # (id, side) -> {key: value}
        self.problems = []  # lines refused, sides printed twice

    def feed_console(self, text):
        """Takes every PINLEASE-BENCH line of console text."""
        by_id = {f.id: f for f in self.figures}
        for raw in text.splitlines():
            line = raw.strip()
            if not line.startswith(markers.BENCH + " "):
                continue
            try:
                side, fid, value, details = parse_line(line, by_id)
            except BenchLineError as e:
                self.problems.append(str(e))
                continue
            if (fid, side) in self.values:
                self.problems.append(f"{side} {fid} printed twice: {line!r}")
                continue
            self.values[fid, side] = value
            self.details[fid, side] = details

    def missing(self):
        """["ID SIDE"] of every side of every figure that printed no value."""
        return [f"{f.id} {s}" for f in self.figures for s in f.sides
                if (f.id, s) not in self.values]

    def ratio(self, fig, side):
        """VALUE(pinlease) / VALUE(side) in the figure's unit, or None."""
        a, b = self.values.get((fig.id, REFERENCE)), self.values.get((fig.id, side))
        if a is None or b is None or b == 0:
            return None
        return a / b

    def verdicts(self, fig):
        """[(target text, ratio or None, 'PASS'|'MISS'|'n/a')]."""
        out = []
        for side, op, x in fig.targets:
            r = self.ratio(fig, side)
            if r is None:
                v = "n/a"
            else:
                v = "PASS" if (r >= x if op == ">=" else r <= x) else "MISS"
            out.append((f"{side}{op}{x:g}", r, v))
        return out

    def table(self):
        """The text table: one row per figure."""
        others = [s for s in all_sides(self.figures) if s != REFERENCE]
        head = ["figure", "unit", REFERENCE]
        for s in others:
            head += [s, f"{REFERENCE}/{s}"]
        head += ["target", "verdict"]
        rows = [head]
        for f in self.figures:
            row = [f.id, f.unit, fmt_value(self.values.get((f.id, REFERENCE)))]
            for s in others:
                if s in f.sides:
                    row += [fmt_value(self.values.get((f.id, s))), fmt_ratio(self.ratio(f, s))]
                else:
                    row += ["", ""]
            vs = self.verdicts(f)
            row += [",".join(t for t, _, _ in vs) or "-",
                    " ".join(v for _, _, v in vs) or "-"]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                         for r in rows)

    def to_json(self, meta):
        figs = []
        for f in self.figures:
            figs.append({
                "id": f.id, "unit": f.unit, "better": f.better,
                "values": {s: self.values.get((f.id, s)) for s in f.sides},
                "details": {s: self.details.get((f.id, s), {}) for s in f.sides},
                "ratios": {s: self.ratio(f, s) for s in f.sides[1:]},
                "targets": [{"target": t, "ratio": r, "verdict": v}
                            for t, r, v in self.verdicts(f)],
            })
        return {**meta, "figures": figs, "missing": self.missing(), "problems": self.problems}


def fmt_value(v):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}"


def machine():
    """The host's CPU model and count, as /proc/cpuinfo and the OS say."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model, "nproc": os.cpu_count()}


def finish(out, programs_code, meta, say, figures_text=None):
    """After a --bench guest run: reads OUT/console.log, prints the table,
    writes OUT/bench.txt and OUT/bench.json; returns the run's exit code:
    EXIT_OK when the programs exited 0 (PROGRAMS_CODE) and every side of
    every figure printed a value, else EXIT_RUN naming what is missing."""
    figures = parse_figures(figures_text if figures_text is not None
                            else FIGURES_FILE.read_text())
    report = Report(figures)
    console_log = out / "console.log"
    if console_log.is_file():
        report.feed_console(console_log.read_text(errors="replace"))
    header = [f"machine: {meta['machine']['cpu']}, {meta['machine']['nproc']} CPUs; "
              f"guest kernel {meta['kernel']}; QEMU {meta['qemu']} ({meta['accel']}); "
              f"guest memory {meta['guest_mem_mib']} MiB; "
              f"--bench-seconds {meta['seconds']:g}, --bench-max-mib {meta['max_mib']}"]
    text = "\n".join(header + ["", report.table()]) + "\n"
    missing, problems = report.missing(), report.problems
    if problems:
        text += "\nrefused lines:\n" + "".join(f"  {p}\n" for p in problems)
    if missing:
        text += f"\nmissing ({len(missing)}): {', '.join(missing)}\n"
    (out / "bench.txt").write_text(text)
    (out / "bench.json").write_text(json.dumps(report.to_json(meta), indent=2) + "\n")
    for line in text.rstrip("\n").splitlines():
        say(line)
    say(f"bench: {out}/bench.txt, {out}/bench.json (PASS/MISS is information, not the verdict)")
    if programs_code != EXIT_OK or missing or problems:
        say("bench FAILED: " + "; ".join(
            (["the guest's bench programs did not both exit 0"] if programs_code != EXIT_OK
             else []) + ([f"no value for {', '.join(missing)}"] if missing else [])
            + ([f"{len(problems)} line(s) refused"] if problems else [])))
        return EXIT_RUN
    return EXIT_OK
