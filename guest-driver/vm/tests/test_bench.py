"""Host tests of guest-driver/vm/bench.py (`run --bench`'s figures): the
figure table's format, the PINLEASE-BENCH lines, pairing and ratios, the
targets both ways, the exit code; and that ibv_bench.c prints exactly the
rxe figures of bench_figures.txt."""

import json
import re
import sys
import tempfile
import unittest
from pathlib import Path

VM_DIR = Path(__file__).resolve().parents[1]
sys.dont_write_bytecode = True
sys.path.insert(0, str(VM_DIR))
import bench  # noqa: E402
import markers  # noqa: E402
from exitcodes import EXIT_OK, EXIT_RUN  # noqa: E402

IBV_BENCH_C = VM_DIR.parent / "bench" / "ibv_bench.c"
FIGURES = """\
# comment
rate   ops/s  higher  pinlease,rxe,memcpy  rxe>=2.0
time   ms     lower   pinlease,barepin     barepin<=1.5
solo   us     lower   pinlease             -
"""
MEMCPY_LINE = f"{markers.BENCH} memcpy rate 400.0"


def line(side, fid, value, *details):
    return " ".join([markers.BENCH, side, fid, str(value), *details])


def report(*lines, figures=FIGURES):
    r = bench.Report(bench.parse_figures(figures, "t"))
    r.feed_console("\n".join(lines))
    return r


class FiguresFile(unittest.TestCase):
    def test_the_real_file(self):
        figs = bench.parse_figures(bench.FIGURES_FILE.read_text())
        self.assertEqual(len({f.id for f in figs}), len(figs))
        self.assertEqual(bench.all_sides(figs), ["pinlease", "rxe", "memcpy", "barepin"])

    def test_format_errors_name_line_and_figure(self):
        for bad, said in (
            ("a ops/s higher pinlease", "want ID UNIT"),
            ("a ops/s higher pinlease -\na us lower pinlease -", "a defined twice"),
            ("a ops/s faster pinlease -", "BETTER is 'faster'"),
            ("a ops/s higher rxe,pinlease -", "must start with pinlease"),
            ("a ops/s higher pinlease,rxe rxe>2", "not SIDE>=X"),
            ("a ops/s higher pinlease,rxe memcpy>=1", "names side memcpy"),
            ("a ms lower pinlease,rxe rxe>=1", "points the wrong way"),
            ("a ops/s higher pinlease,rxe rxe<=1", "points the wrong way"),
            ("# only a comment", "no figures"),
        ):
            with self.assertRaises(bench.FiguresError, msg=bad) as cm:
                bench.parse_figures(bad, "t")
            self.assertIn(said, str(cm.exception))


class Lines(unittest.TestCase):
    def setUp(self):
        self.by_id = {f.id: f for f in bench.parse_figures(FIGURES, "t")}

    def test_parse(self):
        self.assertEqual(bench.parse_line(line("rxe", "rate", "12.5", "n=3", "secs=1.0"),
                                          self.by_id),
                         ("rxe", "rate", 12.5, {"n": "3", "secs": "1.0"}))

    def test_refusals_name_the_culprit(self):
        for bad, said in (
            (line("rxe", "nosuch", 1), "unknown figure id 'nosuch'"),
            (line("gpu", "rate", 1), "no side 'gpu'"),
            (line("barepin", "rate", 1), "no side 'barepin'"),
            (line("rxe", "rate", "fast"), "value 'fast'"),
            (line("rxe", "rate", 1, "n"), "'n' is not KEY=VALUE"),
            (f"{markers.BENCH} rxe rate", "not '"),
        ):
            with self.assertRaises(bench.BenchLineError, msg=bad) as cm:
                bench.parse_line(bad, self.by_id)
            self.assertIn(said, str(cm.exception))


class Pairing(unittest.TestCase):
    def test_ratios_and_targets_both_ways(self):
        r = report("[    3.1] noise", line("pinlease", "rate", 1000) + "\r",
                   line("rxe", "rate", 400), MEMCPY_LINE,
                   line("pinlease", "time", 30), line("barepin", "time", 20),
                   line("pinlease", "solo", 7))
        rate, time, solo = r.figures
        self.assertEqual(r.ratio(rate, "rxe"), 2.5)
        self.assertEqual(r.verdicts(rate), [("rxe>=2", 2.5, "PASS")])
        self.assertEqual(r.ratio(time, "barepin"), 1.5)
        self.assertEqual(r.verdicts(time), [("barepin<=1.5", 1.5, "PASS")],
                         "lower is better: 1.5 x the bare pin is within <=1.5")
        self.assertEqual(r.verdicts(solo), [])
        self.assertEqual(r.missing(), [])
        r = report(line("pinlease", "rate", 700), line("rxe", "rate", 400),
                   line("pinlease", "time", 31), line("barepin", "time", 20))
        self.assertEqual([v for _, _, v in r.verdicts(r.figures[0])], ["MISS"])
        self.assertEqual([v for _, _, v in r.verdicts(r.figures[1])], ["MISS"],
                         "a time 1.55 x the bare pin misses <=1.5")

    def test_missing_sides_are_named_and_judge_nothing(self):
        r = report(line("rxe", "rate", 400), line("pinlease", "time", 3))
        self.assertEqual(r.missing(), ["rate pinlease", "rate memcpy", "time barepin",
                                       "solo pinlease"])
        self.assertEqual(r.verdicts(r.figures[0]), [("rxe>=2", None, "n/a")])

    def test_refused_and_repeated_lines_are_problems(self):
        r = report(line("rxe", "nosuch", 1), line("rxe", "rate", 1), line("rxe", "rate", 2))
        self.assertEqual(len(r.problems), 2, r.problems)
        self.assertIn("nosuch", r.problems[0])
        self.assertIn("printed twice", r.problems[1])
        self.assertEqual(r.values["rate", "rxe"], 1.0, "the first value stays")

    def test_table_has_a_row_per_figure_with_ratio_columns(self):
        r = report(line("pinlease", "rate", 1000), line("rxe", "rate", 400), MEMCPY_LINE)
        rows = r.table().splitlines()
        self.assertEqual(rows[0].split(), ["figure", "unit", "pinlease", "rxe", "pinlease/rxe",
                                           "memcpy", "pinlease/memcpy", "barepin",
                                           "pinlease/barepin", "target", "verdict"])
        self.assertEqual(rows[1].split(), ["rate", "ops/s", "1,000", "400.0", "2.50", "400.0",
                                           "2.50", "rxe>=2", "PASS"])
        self.assertEqual(len(rows), 4)


META = {"machine": {"cpu": "cpu", "nproc": 2}, "kernel": "6.12", "qemu": "10.0.2",
        "accel": "tcg", "guest_mem_mib": 2048, "seconds": 0.5, "max_mib": 128}
ALL_LINES = [line("pinlease", "rate", 10), line("rxe", "rate", 400), MEMCPY_LINE,
             line("pinlease", "time", 30), line("barepin", "time", 20),
             line("pinlease", "solo", 7)]


class Finish(unittest.TestCase):
    def run_finish(self, lines, programs_code=EXIT_OK):
        out = Path(tempfile.mkdtemp(prefix="bench."))
        (out / "console.log").write_text("\r\n".join(["boot noise", *lines, ""]))
        said = []
        code = bench.finish(out, programs_code, META, said.append, FIGURES)
        return code, out, "\n".join(said)

    def test_every_row_printed_is_ok_whatever_the_targets_say(self):
        code, out, said = self.run_finish(ALL_LINES)
        self.assertEqual(code, EXIT_OK, said)
        self.assertIn("MISS", said, "rate misses its target; the run still passes")
        data = json.loads((out / "bench.json").read_text())
        self.assertEqual((data["kernel"], data["missing"], data["figures"][0]["ratios"]),
                         ("6.12", [], {"rxe": 0.025, "memcpy": 0.025}))
        self.assertIn("guest memory 2048 MiB", (out / "bench.txt").read_text())

    def test_a_missing_row_fails_the_run_naming_it(self):
        code, out, said = self.run_finish(ALL_LINES[1:])
        self.assertEqual(code, EXIT_RUN)
        self.assertIn("no value for rate pinlease", said)
        self.assertIn("missing (1): rate pinlease", (out / "bench.txt").read_text())

    def test_a_failed_program_or_refused_line_fails_the_run(self):
        self.assertEqual(self.run_finish(ALL_LINES, EXIT_RUN)[0], EXIT_RUN)
        code, _, said = self.run_finish(ALL_LINES + [line("rxe", "nosuch", 1)])
        self.assertEqual(code, EXIT_RUN)
        self.assertIn("unknown figure id 'nosuch'", said)


def ibv_bench_ids():
    """The figure ids ibv_bench.c prints: its string literals shaped like an
    id (lowercase words joined by '_'), less the libibverbs calls its error
    messages name (ibv_*)."""
    literals = re.findall(r'"((?:[^"\\]|\\.)*)"', IBV_BENCH_C.read_text())
    return {s for s in literals
            if re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)+", s) and not s.startswith("ibv_")}


class IbvBenchSource(unittest.TestCase):
    def test_prints_exactly_the_rxe_figures(self):
        figs = bench.parse_figures(bench.FIGURES_FILE.read_text())
        rxe = {f.id for f in figs if "rxe" in f.sides}
        printed = ibv_bench_ids()
        self.assertEqual(printed - {f.id for f in figs}, set(),
                         "ibv_bench.c prints ids bench_figures.txt does not define")
        self.assertEqual(rxe - printed, set(), "rxe figures ibv_bench.c never prints")
        self.assertEqual(printed - rxe, set(), "ids ibv_bench.c prints whose figure has no rxe")

    def test_its_side_is_rxe(self):
        self.assertRegex(IBV_BENCH_C.read_text(), r'#define\s+SIDE\s+"rxe"')


if __name__ == "__main__":
    unittest.main()
