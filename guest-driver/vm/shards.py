"""One campaign over many machines: `vm/campaign --shard K/N` runs one
deterministic part of the plan x seed runs, and `vm/campaign merge` joins
the parts' campaign.json files into the one a single machine would have
written (docs/faults.md section 3.3.1).

The split: the runs sorted by (plan name, seed), run i belongs to shard
(i mod N) + 1. The sort makes it independent of glob and dict order and of
the machine; round robin (not a hash of the run) spreads every plan's seeds
over the shards, so the shards get similar work (runs of one plan take
similar times) and none is empty while N <= the number of runs. A hash
would keep a run in its shard when plans are added, but the merge refuses
shards of different campaigns anyway.

What makes two shards parts of one campaign (campaign.json "campaign"):
the full run list before the split, each plan file's SHA-256 and rules, the
commit and a digest of its uncommitted changes; "id" is a digest of those.

Python 3.11 standard library only.
"""

import hashlib
import json
import re
import subprocess
from pathlib import Path

SHARD = re.compile(r"^(\d+)/(\d+)$")


class ShardError(Exception):
    """A bad --shard value or shards that do not make one campaign; the
    message names the flag or the shard and what was wrong."""


def parse_shard(text):
    """(K, N) from 'K/N' with 1 <= K <= N."""
    m = SHARD.match(text.strip())
    if not m:
        raise ShardError(f"--shard wants K/N (e.g. 2/4), got {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise ShardError(f"--shard {text!r}: N must be >= 1, got {n}")
    if not 1 <= k <= n:
        raise ShardError(f"--shard {text!r}: K must be 1..{n}, got {k}")
    return k, n


def run_key(plan_name, seed):
    return f"{plan_name} {seed}"


def split(runs, k, n, name=lambda r: r[0].name, seed=lambda r: r[1]):
    """The runs (plan, seed) of shard K of N, in (plan name, seed) order."""
    ordered = sorted(runs, key=lambda r: (name(r), seed(r)))
    return [r for i, r in enumerate(ordered) if i % n == k - 1]


def shard_of(index, n):
    """The shard (1..N) of the run at INDEX in (plan name, seed) order."""
    return index % n + 1


def repo_state(repo):
    """(commit, digest of `git diff HEAD`): what the runs were built from.
    Outside a git checkout both are 'unknown'."""
    def git(*args):
        r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                           stdin=subprocess.DEVNULL)
        return r.stdout if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    diff = git("diff", "HEAD")
    return (commit.decode().strip() if commit else "unknown",
            hashlib.sha256(diff).hexdigest()[:16] if diff is not None else "unknown")


def rule_keys(plan):
    return [f"{r.get('point')} {r.get('action')}" for r in plan.rules() if isinstance(r, dict)]


def identity(runs, commit, diff_digest, subset=None):
    """What identifies the campaign the runs (plan, seed) are, before any split."""
    plans = {}
    for p, _ in runs:
        plans[p.name] = {"sha256": hashlib.sha256(Path(p.path).read_bytes()).hexdigest(),
                         "rules": rule_keys(p)}
    listed = sorted(run_key(p.name, s) for p, s in runs)
    ident = {"runs": listed, "plans": dict(sorted(plans.items())), "commit": commit,
             "uncommitted_diff": diff_digest, "subset": subset}
    ident["id"] = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return ident


# ---------------------------------------------------------------- merging


def load_shard(out_dir):
    """OUT_DIR/campaign.json of one shard, checked to be one."""
    path = Path(out_dir) / "campaign.json"
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise ShardError(f"{path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise ShardError(f"{path}: not JSON: {e}") from None
    camp = doc.get("campaign") if isinstance(doc, dict) else None
    if not isinstance(camp, dict) or "id" not in camp or not isinstance(doc.get("runs"), list):
        raise ShardError(f"{path}: no \"campaign\" identity or \"runs\" (written by a "
                         "vm/campaign before --shard existed?)")
    return path, doc


def check_shards(shards):
    """SHARDS: [(source, campaign.json document)]. The problems that keep
    them from being one campaign, each naming the shard it came from."""
    problems = []
    first_src, first = shards[0]
    ref = first["campaign"]
    for src, doc in shards[1:]:
        camp = doc["campaign"]
        if camp["id"] == ref["id"]:
            continue
        what = [k for k in ("commit", "uncommitted_diff", "subset", "plans", "runs")
                if camp.get(k) != ref.get(k)]
        problems.append(f"{src}: campaign {camp['id']}, not {ref['id']} of {first_src} "
                        f"(differs in: {', '.join(what) or 'id'})")
    if problems:
        return problems
    ns = {src: (doc["campaign"].get("shard") or {}).get("n") for src, doc in shards}
    if len(set(ns.values())) != 1 or None in ns.values():
        return ["shards of different splits (N): "
                + ", ".join(f"{src} {n if n else 'unsharded'}" for src, n in ns.items())]
    n = next(iter(ns.values()))
    seen_k = {}
    for src, doc in shards:
        k = doc["campaign"]["shard"]["k"]
        if k in seen_k:
            problems.append(f"{src}: shard {k}/{n} given twice (also {seen_k[k]})")
        seen_k[k] = src
    missing_k = [k for k in range(1, n + 1) if k not in seen_k]
    if missing_k:
        problems.append("missing shard(s) " + ", ".join(f"{k}/{n}" for k in missing_k))
    wanted = ref["runs"]
    owner = {key: shard_of(i, n) for i, key in enumerate(wanted)}
    where = {}
    for src, doc in shards:
        k = doc["campaign"]["shard"]["k"]
        for r in doc["runs"]:
            key = run_key(r.get("plan"), r.get("seed"))
            if key not in owner:
                problems.append(f"{src}: run {key} is not in the campaign")
            elif owner[key] != k:
                problems.append(f"{src}: run {key} belongs to shard {owner[key]}/{n}, "
                                f"not {k}/{n}")
            if key in where:
                problems.append(f"{src}: run {key} also in {where[key]} (overlap)")
            where.setdefault(key, src)
    for key in wanted:
        if key not in where:
            k = owner[key]
            problems.append(f"{seen_k.get(k, f'shard {k}/{n} (not given)')}: run {key} "
                            f"missing (shard {k}/{n})")
    return problems


def merged_runs(shards):
    runs = [r for _, doc in shards for r in doc["runs"]]
    return sorted(runs, key=lambda r: (r["plan"], r["seed"]))


def merged_identity(shards):
    camp = dict(shards[0][1]["campaign"])
    camp["shard"] = None
    camp["merged_from"] = [{"source": str(src), "shard": doc["campaign"]["shard"],
                            "wall_seconds": doc.get("wall_seconds")} for src, doc in shards]
    return camp


def merged_wall(shards):
    """The merged campaign's wall time: its longest shard (shards run at
    the same time on different machines)."""
    walls = [doc.get("wall_seconds") or 0.0 for _, doc in shards]
    return max(walls) if walls else 0.0
