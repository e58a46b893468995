"""Run plans for fault campaigns (docs/faults.md section 3.1).

A run plan is a daemon fault plan (section 1.1: `seed`, `[[rule]]`) plus two
optional tables that only the runner reads: `[guest]` (module parameters,
section 2; a list means one value chosen by the run's seed) and `[run]`
(`cases`, the --cases default; `description`). This module loads a plan,
validates the two runner tables strictly, picks the guest values for a seed
and writes the daemon's part back as TOML. The daemon validates its own part
(rules) when it starts: one validator per half, no copy of its rules here.

Python 3.11 standard library only.
"""

import tomllib
from pathlib import Path

import moduleparams

MASK64 = (1 << 64) - 1
# The daemon reads a plan file's seed as a TOML integer (signed 64-bit); the
# run's seed goes into OUT/faults.toml, so it is kept to that range.
SEED_MAX = (1 << 63) - 1

# Module parameters a plan may set (docs/faults.md section 2, and
# require_lease): name -> (type, lowest, highest), read from the module's
# source (moduleparams.py), whose ranges the module enforces at insmod;
# checking them here turns a typo into a setup error naming the plan instead
# of a guest without the module.
GUEST_PARAMS = moduleparams.params()
# Module fault points (the parameters that inject), as the campaign counts
# them from the module's "fault injected: NAME" log lines.
MODULE_FAULT_POINTS = moduleparams.fault_points()

RUN_KEYS = {"cases": str, "description": str}


class PlanError(Exception):
    """A plan the runner refuses: the message names the file, key and value."""


class Plan:
    def __init__(self, path, daemon, guest, run):
        self.path = path
        self.daemon = daemon  # dict: what the daemon gets (seed, rule, ...)
        self.guest = guest  # dict name -> int/bool or non-empty list of them
        self.run = run  # dict: cases, description

    @property
    def name(self):
        return Path(self.path).stem

    def rules(self):
        r = self.daemon.get("rule", [])
        return r if isinstance(r, list) else []

    def points(self):
        """The daemon fault points the plan's rules name, in file order."""
        return [r.get("point") for r in self.rules() if isinstance(r, dict)]


def _type_name(v):
    return {bool: "boolean", int: "integer", float: "float", str: "string", list: "array",
            dict: "table"}.get(type(v), type(v).__name__)


def _check_guest_value(path, key, v, where):
    want, lowest, highest = GUEST_PARAMS[key]
    # bool is an int in Python; a TOML `true` is not a number of pages.
    if type(v) is not want:
        raise PlanError(f"{path}: [guest] {key}{where} must be "
                        f"{'an integer' if want is int else 'a boolean'}, got "
                        f"{_type_name(v)} {v!r}")
    if want is int:
        if not lowest <= v <= highest:
            raise PlanError(f"{path}: [guest] {key}{where} must be in {lowest}..{highest}, "
                            f"got {v}")


def parse_plan(text, path="<plan>"):
    """A Plan from TOML text; PlanError on bad TOML or bad [guest]/[run]."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PlanError(f"{path}: not valid TOML: {e}") from None
    guest = doc.pop("guest", {})
    run = doc.pop("run", {})
    if not isinstance(guest, dict):
        raise PlanError(f"{path}: 'guest' must be a table ([guest]), got {_type_name(guest)} "
                        f"{guest!r}")
    if not isinstance(run, dict):
        raise PlanError(f"{path}: 'run' must be a table ([run]), got {_type_name(run)} {run!r}")
    for key, v in guest.items():
        if key not in GUEST_PARAMS:
            raise PlanError(f"{path}: [guest] has unknown key {key!r} (value {v!r}); allowed: "
                            + ", ".join(sorted(GUEST_PARAMS)))
        if isinstance(v, list):
            if not v:
                raise PlanError(f"{path}: [guest] {key} is an empty list: give at least one "
                                "value to choose from")
            for i, item in enumerate(v):
                _check_guest_value(path, key, item, f"[{i}]")
        else:
            _check_guest_value(path, key, v, "")
    for key, v in run.items():
        if key not in RUN_KEYS:
            raise PlanError(f"{path}: [run] has unknown key {key!r} (value {v!r}); allowed: "
                            + ", ".join(sorted(RUN_KEYS)))
        if not isinstance(v, RUN_KEYS[key]):
            raise PlanError(f"{path}: [run] {key} must be a string, got {_type_name(v)} {v!r}")
        if key == "cases" and not v.strip():
            raise PlanError(f"{path}: [run] cases is empty: give a case glob like 'campaign_*'")
    seed = doc.get("seed", 0)
    if type(seed) is not int or not 0 <= seed <= SEED_MAX:
        raise PlanError(f"{path}: seed must be an integer in 0..{SEED_MAX}, got "
                        f"{_type_name(seed)} {seed!r}")
    return Plan(str(path), doc, guest, run)


def load_plan(path):
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise PlanError(f"plan {path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise PlanError(f"plan {path}: not UTF-8 text") from None
    return parse_plan(text, path)


def parse_seed(text):
    """A run seed from the command line: an integer in 0..SEED_MAX."""
    try:
        v = int(text, 0)
    except ValueError:
        raise PlanError(f"seed must be an integer, got {text!r}") from None
    if not 0 <= v <= SEED_MAX:
        raise PlanError(f"seed must be in 0..{SEED_MAX}, got {v}")
    return v


# ---------------------------------------------------------------- picks


def splitmix64(state):
    """One splitmix64 step: (next state, output). The daemon seeds its rule
    streams with the same generator (docs/faults.md section 1.1)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def _fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK64
    return h


def pick_guest_params(guest, seed):
    """The module parameters for this seed: a list value becomes one of its
    items, chosen by a stream seeded from (seed, parameter name) so that
    adding a parameter to a plan does not change the others' picks. Returns
    (params: name -> value, picks: name -> {"choices", "index", "value"})."""
    params, picks = {}, {}
    for key in sorted(guest):
        v = guest[key]
        if isinstance(v, list):
            _, r = splitmix64(seed ^ _fnv1a64(key))
            i = r % len(v)
            params[key] = v[i]
            picks[key] = {"choices": list(v), "index": i, "value": v[i]}
        else:
            params[key] = v
    return params, picks


def module_args(params):
    """The insmod arguments for the parameters: NAME=VALUE, booleans Y/N."""
    out = []
    for key in sorted(params):
        v = params[key]
        out.append(f"{key}={'Y' if v is True else 'N' if v is False else v}")
    return " ".join(out)


# ---------------------------------------------------------------- TOML out


def _toml_key(k):
    if k and all(c.isalnum() or c in "_-" for c in k):
        return k
    return _toml_str(k)


def _toml_str(s):
    out = ['"']
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise PlanError(f"cannot write {_type_name(v)} {v!r} as TOML")


def daemon_toml(plan, seed):
    """The daemon's part of the plan as TOML, with `seed` set to the run's
    seed (so the file alone reproduces the run). Keys the daemon does not
    know are passed on for it to reject with its own error."""
    lines = [f"# written by guest-driver/vm/run from {plan.path} (its [guest] and [run]",
             "# tables removed; seed set to the run's --seed)", f"seed = {seed}"]
    tables = []  # (header, table): after the top-level keys, as TOML wants
    for k, v in plan.daemon.items():
        if k == "seed":
            continue
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            tables += [(f"[[{_toml_key(k)}]]", item) for item in v]
        elif isinstance(v, dict):
            tables.append((f"[{_toml_key(k)}]", v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    for header, table in tables:
        lines += ["", header]
        lines += [f"{_toml_key(ik)} = {_toml_value(iv)}" for ik, iv in table.items()]
    return "\n".join(lines) + "\n"
