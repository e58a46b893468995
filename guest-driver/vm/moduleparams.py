"""The guest module's parameters and fault points, read from the module's
own source (guest-driver/module/*.c), the one place they are defined.

The runner checks a campaign plan's [guest] table against these before it
boots anything (faultplan.py): a typo or an out-of-range value becomes a
setup error naming the plan, not a guest whose insmod failed. Reading the C
rather than keeping a table here means a range changed in the module is the
range the runner enforces.

What is read:
  - PL_FAULT_PARAM(var, "name", default, lowest, highest) in pl_faults.c
    (bounds may be integers, INT_MAX, or a #define of the same file);
  - module_param_named(name, var, bool, perm) anywhere in the module (a
    boolean parameter, e.g. require_lease);
  - pr_info("fault injected: NAME ...") lines: the module's fault points,
    as the campaign counts them from the log.
"""

import re
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1] / "module"
INT_MAX = 2**31 - 1

FAULT_PARAM = re.compile(
    r'PL_FAULT_PARAM\(\s*(\w+)\s*,\s*"(\w+)"\s*,\s*(-?\w+)\s*,\s*(-?\w+)\s*,\s*(-?\w+)\s*\)\s*;')
DEFINE = re.compile(r"^#define\s+(\w+)\s+(-?\d+|INT_MAX)\s*$", re.M)
BOOL_PARAM = re.compile(r"module_param_named\(\s*(\w+)\s*,\s*\w+\s*,\s*bool\s*,")
FAULT_POINT = re.compile(r'pr_info(?:_ratelimited)?\(\s*"fault injected: ([a-z_]+)\b')


class ModuleSourceError(ValueError):
    """The module's source does not say what this reader expects."""


def _int(token, defines, where):
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if token == "INT_MAX":
        return INT_MAX
    if token in defines:
        return defines[token]
    raise ModuleSourceError(f"{where}: bound {token!r} is not an integer, INT_MAX or "
                            "a #define of the same file")


def parse_fault_params(text, where="pl_faults.c"):
    """{name: (int, lowest, highest)} from pl_faults.c's PL_FAULT_PARAM lines."""
    defines = {k: (INT_MAX if v == "INT_MAX" else int(v)) for k, v in DEFINE.findall(text)}
    out = {}
    for _var, name, _default, lo, hi in FAULT_PARAM.findall(text):
        lowest, highest = _int(lo, defines, f"{where} {name}"), _int(hi, defines, f"{where} {name}")
        if lowest > highest:
            raise ModuleSourceError(f"{where}: {name} has lowest {lowest} > highest {highest}")
        out[name] = (int, lowest, highest)
    if not out:
        raise ModuleSourceError(f"{where}: no PL_FAULT_PARAM(var, \"name\", def, lo, hi); lines")
    return out


def _sources():
    files = sorted(MODULE_DIR.glob("*.c"))
    if not files:
        raise ModuleSourceError(f"no module sources in {MODULE_DIR}")
    return {f.name: f.read_text() for f in files}


def params():
    """Every parameter a run plan may set: name -> (type, lowest, highest);
    booleans are (bool, None, None)."""
    src = _sources()
    if "pl_faults.c" not in src:
        raise ModuleSourceError(f"{MODULE_DIR}/pl_faults.c is missing")
    out = parse_fault_params(src["pl_faults.c"])
    for text in src.values():
        for name in BOOL_PARAM.findall(text):
            out[name] = (bool, None, None)
    return out


def fault_points():
    """The module's fault points, in source order (pin_after, lease_set, ...)."""
    seen = []
    for text in _sources().values():
        for name in FAULT_POINT.findall(text):
            if name not in seen:
                seen.append(name)
    return tuple(seen)
