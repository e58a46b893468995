//! The `fault_plan` target: the fault-plan parser
//! (`pinlease::faults::parse_plan`) on any text.
//!
//! Checks: it never panics; a refusal names where the problem is (`top
//! level:`, `rule N:` or `not valid TOML:`, docs/faults.md 1.1); an
//! accepted plan satisfies the documented bounds (0 < probability <= 1,
//! ms at most 3600000 and at least 1 for delay, the action applies at the
//! point), its points print back to what parses to them, and the plan
//! written out again as TOML parses to the same plan.

use pinlease::faults::{parse_plan, Action, Plan, Point};

/// The plan as a plan file, in the keys of docs/faults.md 1.1.
pub fn render(plan: &Plan) -> String {
    let mut top = toml::Table::new();
    top.insert("seed".into(), toml::Value::Integer(plan.seed as i64));
    let rules: Vec<toml::Value> = plan
        .rules
        .iter()
        .map(|r| {
            let mut t = toml::Table::new();
            t.insert("point".into(), r.point.to_string().into());
            t.insert("action".into(), r.action.name().into());
            match r.action {
                Action::Fail(s) => {
                    t.insert("status".into(), s.name().into());
                }
                Action::Delay(ms) | Action::Withhold(ms) => {
                    t.insert("ms".into(), toml::Value::Integer(ms as i64));
                }
                _ => {}
            }
            t.insert("probability".into(), r.probability.into());
            t.insert("skip".into(), toml::Value::Integer(r.skip as i64));
            t.insert("count".into(), toml::Value::Integer(r.count as i64));
            toml::Value::Table(t)
        })
        .collect();
    top.insert("rule".into(), toml::Value::Array(rules));
    toml::to_string(&top).expect("a plan renders as TOML")
}

pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let plan = match parse_plan(&text) {
        Ok(plan) => plan,
        Err(e) => {
            let msg = &e.0;
            assert!(
                msg.starts_with("top level: ")
                    || msg.starts_with("not valid TOML: ")
                    || (msg.starts_with("rule ")
                        && msg[5..]
                            .split(':')
                            .next()
                            .is_some_and(|n| n.parse::<usize>().is_ok_and(|n| n >= 1))),
                "refusal does not say where: {msg:?}"
            );
            return;
        }
    };
    assert!(plan.seed <= i64::MAX as u64, "a TOML integer seed");
    for r in &plan.rules {
        assert!(
            r.probability > 0.0 && r.probability <= 1.0,
            "probability {}",
            r.probability
        );
        match r.action {
            Action::Delay(ms) => assert!((1..=3_600_000).contains(&ms), "delay {ms}"),
            Action::Withhold(ms) => assert!(ms <= 3_600_000, "withhold {ms}"),
            Action::Fail(s) => assert_ne!(s, pinlease_abi::Status::Ok, "fail with OK"),
            _ => {}
        }
        assert!(
            r.action.allowed_at(r.point),
            "{:?} at {}",
            r.action,
            r.point
        );
        assert_ne!(r.point, Point::Runtime, "runtime is no plan point");
        assert_eq!(Point::parse(&r.point.to_string()), Some(r.point));
    }
    let again = parse_plan(&render(&plan))
        .unwrap_or_else(|e| panic!("the rendered plan is refused: {e}\n{}", render(&plan)));
    assert_eq!(again, plan, "plan -> TOML -> plan");
}

/// A run plan's daemon plan: without the `[guest]` and `[run]` tables
/// `vm/run` strips (docs/faults.md 3.1).
fn daemon_part(text: &str) -> String {
    let mut keep = true;
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with('[') {
            keep = !(t.starts_with("[guest]") || t.starts_with("[run]"));
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Seeds: the plan blocks of docs/faults.md, the campaign plans, and one
/// rule of every action.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let doc = include_str!("../../docs/faults.md");
    for (i, block) in doc.split("```toml\n").skip(1).enumerate() {
        let plan = daemon_part(block.split("```").next().unwrap_or(""));
        out.push((format!("faults_md_{}", i + 1), plan.into_bytes()));
    }
    let campaigns = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-driver/campaigns");
    let mut files: Vec<_> = std::fs::read_dir(campaigns)
        .expect("guest-driver/campaigns")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for p in files {
        let name = p.file_stem().unwrap().to_string_lossy().replace('-', "_");
        let text = std::fs::read_to_string(&p).unwrap();
        out.push((format!("campaign_{name}"), daemon_part(&text).into_bytes()));
    }
    for (code, _, name) in pinlease_abi::FAULT_ACTIONS {
        let (point, extra) = match *code {
            pinlease_abi::PL_FAULT_ACTION_FAIL => ("request:FILL:after", "status = \"EIO\"\n"),
            pinlease_abi::PL_FAULT_ACTION_DELAY => ("event:MR_REVOKED", "ms = 5\n"),
            pinlease_abi::PL_FAULT_ACTION_WITHHOLD => ("lease-break", "ms = 0\n"),
            pinlease_abi::PL_FAULT_ACTION_DROP => ("request:DEREG_MR:before", "count = 1\n"),
            pinlease_abi::PL_FAULT_ACTION_DUPLICATE | pinlease_abi::PL_FAULT_ACTION_REORDER => {
                ("request:*:after", "")
            }
            _ => (
                "context-teardown",
                "probability = 0.5\nskip = 1\ncount = 3\n",
            ),
        };
        let text = format!("seed = 1\n[[rule]]\npoint = \"{point}\"\naction = \"{name}\"\n{extra}");
        out.push((
            format!("action_{}", name.replace('-', "_")),
            text.into_bytes(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_runs_clean_and_most_are_plans() {
        let seeds = seeds();
        let accepted = seeds
            .iter()
            .filter(|(_, s)| parse_plan(std::str::from_utf8(s).unwrap()).is_ok())
            .count();
        for (_, s) in &seeds {
            run(s);
        }
        assert!(
            accepted >= seeds.len() - 1,
            "{accepted} of {} accepted",
            seeds.len()
        );
    }

    #[test]
    fn render_keeps_every_field() {
        let plan = parse_plan(
            "seed = 4\n[[rule]]\npoint = \"request:REG_MR:before\"\naction = \"fail\"\nstatus = \"ENOMEM\"\nprobability = 0.25\nskip = 2\ncount = 1\n",
        )
        .unwrap();
        assert_eq!(parse_plan(&render(&plan)).unwrap(), plan);
        assert!(render(&plan).contains("ENOMEM"));
    }
}
