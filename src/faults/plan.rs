//! Fault plans (docs/faults.md 1.1-1.3): the TOML file format, fault points
//! and actions, and their strict validation. Every error names the rule
//! (1-based), the key and the value seen.

use std::fmt;

use crate::abi::{
    event_kind_name, fault_action_by_name, fault_action_name, fault_class_name, Opcode, Status,
    FAULT_ACTIONS, PL_EVENT_FAULT_INJECTED, PL_EVENT_NEEDS_RESET, PL_FAULT_ACTION_ABORT,
    PL_FAULT_ACTION_DELAY, PL_FAULT_ACTION_DROP, PL_FAULT_ACTION_DUPLICATE, PL_FAULT_ACTION_FAIL,
    PL_FAULT_ACTION_NEEDS_RESET, PL_FAULT_ACTION_REORDER, PL_FAULT_ACTION_REVOKE_MR,
    PL_FAULT_ACTION_SPURIOUS_BREAK, PL_FAULT_ACTION_WITHHOLD, PL_FAULT_CLASS_CONTEXT_TEARDOWN,
    PL_FAULT_CLASS_EVENT, PL_FAULT_CLASS_LEASE_BREAK, PL_FAULT_CLASS_MEMORY_MAP,
    PL_FAULT_CLASS_REQUEST, PL_FAULT_CLASS_RUNTIME,
};

/// Event kinds no rule may name: FAULT_INJECTED and NEEDS_RESET report
/// faults, and are never subject to them. Every other kind of the ABI's
/// name table (`pinlease_abi::EVENT_KINDS`) may be.
const UNFAULTABLE_EVENTS: [u16; 2] = [PL_EVENT_FAULT_INJECTED, PL_EVENT_NEEDS_RESET];

/// The kind a rule's `event:NAME` names, if a rule may name it.
fn faultable_event_kind(name: &str) -> Option<u16> {
    crate::abi::EVENT_KINDS
        .iter()
        .map(|&(kind, _)| kind)
        .filter(|kind| !UNFAULTABLE_EVENTS.contains(kind))
        .find(|&kind| event_kind_name(kind) == Some(name))
}

/// A fault point. In a rule, `None` is the `*` wildcard; in a hit, every
/// field is concrete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Request {
        op: Option<Opcode>,
        after: bool,
    },
    Event(Option<u16>),
    MemoryMap,
    ContextTeardown,
    LeaseBreak,
    /// `pinlease inject now`: never named by a rule.
    Runtime,
}

impl Point {
    /// The point's class (`PL_FAULT_CLASS_*`), as in FAULT_INJECTED's
    /// point code and the status counts.
    pub fn class(self) -> u32 {
        match self {
            Point::Request { .. } => PL_FAULT_CLASS_REQUEST,
            Point::Event(_) => PL_FAULT_CLASS_EVENT,
            Point::MemoryMap => PL_FAULT_CLASS_MEMORY_MAP,
            Point::ContextTeardown => PL_FAULT_CLASS_CONTEXT_TEARDOWN,
            Point::LeaseBreak => PL_FAULT_CLASS_LEASE_BREAK,
            Point::Runtime => PL_FAULT_CLASS_RUNTIME,
        }
    }

    pub fn class_name(self) -> &'static str {
        fault_class_name(self.class()).expect("every PL_FAULT_CLASS_* is in FAULT_CLASSES")
    }

    /// FAULT_INJECTED `args[0]`: `class << 16 | sub`.
    pub fn code(self) -> u64 {
        let sub = match self {
            Point::Request { op, after } => op.map_or(0, |o| o as u64) * 2 + u64::from(after),
            Point::Event(k) => k.map_or(0, u64::from),
            _ => 0,
        };
        u64::from(self.class()) << 16 | sub
    }

    /// Does this rule point match the concrete `hit`?
    pub fn matches(self, hit: Point) -> bool {
        match (self, hit) {
            (Point::Request { op, after }, Point::Request { op: h, after: ha }) => {
                after == ha && (op.is_none() || op == h)
            }
            (Point::Event(k), Point::Event(h)) => k.is_none() || k == h,
            (a, b) => a == b,
        }
    }

    pub fn parse(s: &str) -> Option<Point> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["request", op, when] => {
                let after = match *when {
                    "before" => false,
                    "after" => true,
                    _ => return None,
                };
                let op = match *op {
                    "*" => None,
                    name => Some(*Opcode::ALL.iter().find(|o| o.name() == name)?),
                };
                Some(Point::Request { op, after })
            }
            ["event", kind] => match *kind {
                "*" => Some(Point::Event(None)),
                name => faultable_event_kind(name).map(|k| Point::Event(Some(k))),
            },
            ["memory-map"] => Some(Point::MemoryMap),
            ["context-teardown"] => Some(Point::ContextTeardown),
            ["lease-break"] => Some(Point::LeaseBreak),
            _ => None,
        }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Point::Request { op, after } => write!(
                f,
                "request:{}:{}",
                op.map_or("*", |o| o.name()),
                if after { "after" } else { "before" }
            ),
            Point::Event(k) => write!(f, "event:{}", k.and_then(event_kind_name).unwrap_or("*")),
            Point::MemoryMap => f.write_str("memory-map"),
            Point::ContextTeardown => f.write_str("context-teardown"),
            Point::LeaseBreak => f.write_str("lease-break"),
            Point::Runtime => f.write_str("runtime"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Fail(Status),
    Delay(u64),
    Drop,
    Duplicate,
    Reorder,
    RevokeMr,
    SpuriousBreak,
    Withhold(u64),
    NeedsReset,
    Abort,
}

impl Action {
    /// The actions `pinlease inject now` fires at once (point class
    /// runtime): the others need a request or event to act on.
    pub const RUNTIME: [Action; 4] = [
        Action::RevokeMr,
        Action::SpuriousBreak,
        Action::NeedsReset,
        Action::Abort,
    ];

    /// FAULT_INJECTED `args[1]` (`PL_FAULT_ACTION_*`).
    pub fn code(self) -> u32 {
        match self {
            Action::Fail(_) => PL_FAULT_ACTION_FAIL,
            Action::Delay(_) => PL_FAULT_ACTION_DELAY,
            Action::Drop => PL_FAULT_ACTION_DROP,
            Action::Duplicate => PL_FAULT_ACTION_DUPLICATE,
            Action::Reorder => PL_FAULT_ACTION_REORDER,
            Action::RevokeMr => PL_FAULT_ACTION_REVOKE_MR,
            Action::SpuriousBreak => PL_FAULT_ACTION_SPURIOUS_BREAK,
            Action::Withhold(_) => PL_FAULT_ACTION_WITHHOLD,
            Action::NeedsReset => PL_FAULT_ACTION_NEEDS_RESET,
            Action::Abort => PL_FAULT_ACTION_ABORT,
        }
    }

    pub fn name(self) -> &'static str {
        fault_action_name(self.code()).expect("every PL_FAULT_ACTION_* is in FAULT_ACTIONS")
    }

    /// The action's parameter for logs and status (`ENOMEM`, `200ms`).
    pub fn params(self) -> String {
        match self {
            Action::Fail(s) => s.name().to_string(),
            Action::Delay(ms) | Action::Withhold(ms) => format!("{ms}ms"),
            _ => String::new(),
        }
    }

    /// Does this action decide the request's fate (ends the rule list)?
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Action::Fail(_)
                | Action::Drop
                | Action::Withhold(_)
                | Action::NeedsReset
                | Action::Abort
        )
    }

    /// May this action be used at `point` (docs/faults.md 1.3, "Where")?
    pub fn allowed_at(self, point: Point) -> bool {
        let request = matches!(point, Point::Request { .. });
        let after = matches!(point, Point::Request { after: true, .. });
        let event = matches!(point, Point::Event(_));
        match self {
            Action::Fail(_) => {
                request || matches!(point, Point::ContextTeardown | Point::LeaseBreak)
            }
            Action::Drop => request || event,
            Action::Duplicate | Action::Reorder => after || event,
            Action::Withhold(_) => point == Point::LeaseBreak,
            Action::Delay(_)
            | Action::RevokeMr
            | Action::SpuriousBreak
            | Action::NeedsReset
            | Action::Abort => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuleSpec {
    pub point: Point,
    pub action: Action,
    pub probability: f64,
    pub skip: u64,
    /// 0: unlimited.
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub seed: u64,
    pub rules: Vec<RuleSpec>,
}

/// A plan that did not validate: the message names the rule, key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError(pub String);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

const RULE_KEYS: [&str; 7] = [
    "point",
    "action",
    "status",
    "probability",
    "skip",
    "count",
    "ms",
];

fn shown(v: &toml::Value) -> String {
    v.to_string()
}

fn err(rule: usize, key: &str, v: &toml::Value, why: &str) -> PlanError {
    PlanError(format!("rule {rule}: key \"{key}\" = {}: {why}", shown(v)))
}

fn string<'a>(rule: usize, key: &str, v: &'a toml::Value) -> Result<&'a str, PlanError> {
    v.as_str()
        .ok_or_else(|| err(rule, key, v, "must be a string"))
}

fn unsigned(rule: usize, key: &str, v: &toml::Value) -> Result<u64, PlanError> {
    match v.as_integer() {
        Some(i) if i >= 0 => Ok(i as u64),
        Some(_) => Err(err(rule, key, v, "must not be negative")),
        None => Err(err(rule, key, v, "must be an integer")),
    }
}

/// Parses and validates rule number `rule` (1-based) from its table.
pub fn parse_rule(rule: usize, t: &toml::Table) -> Result<RuleSpec, PlanError> {
    for (k, v) in t {
        if !RULE_KEYS.contains(&k.as_str()) {
            return Err(err(
                rule,
                k,
                v,
                &format!("unknown key (known: {})", RULE_KEYS.join(", ")),
            ));
        }
    }
    let required = |key: &str| {
        t.get(key).ok_or_else(|| {
            PlanError(format!(
                "rule {rule}: key \"{key}\" is missing (value seen: none)"
            ))
        })
    };
    let pv = required("point")?;
    let point = Point::parse(string(rule, "point", pv)?).ok_or_else(|| {
        err(
            rule,
            "point",
            pv,
            "unknown point (request:OP:before|after, event:KIND, memory-map, context-teardown, lease-break)",
        )
    })?;
    let av = required("action")?;
    let action_name = string(rule, "action", av)?;
    let Some(code) = fault_action_by_name(action_name) else {
        let known: Vec<&str> = FAULT_ACTIONS.iter().map(|&(_, _, name)| name).collect();
        return Err(err(
            rule,
            "action",
            av,
            &format!("unknown action (known: {})", known.join(", ")),
        ));
    };
    let needs_status = code == PL_FAULT_ACTION_FAIL;
    let needs_ms = matches!(code, PL_FAULT_ACTION_DELAY | PL_FAULT_ACTION_WITHHOLD);
    for (key, needed) in [("status", needs_status), ("ms", needs_ms)] {
        match (t.get(key), needed) {
            (None, true) => {
                return Err(PlanError(format!(
                    "rule {rule}: key \"{key}\" is missing (value seen: none); action \"{action_name}\" needs it"
                )))
            }
            (Some(v), false) => {
                return Err(err(
                    rule,
                    key,
                    v,
                    &format!("action \"{action_name}\" takes no \"{key}\""),
                ))
            }
            _ => {}
        }
    }
    let ms = match t.get("ms") {
        Some(v) => {
            let ms = unsigned(rule, "ms", v)?;
            if ms > 3_600_000 {
                return Err(err(rule, "ms", v, "out of range (at most 3600000)"));
            }
            if code == PL_FAULT_ACTION_DELAY && ms == 0 {
                return Err(err(rule, "ms", v, "a delay must be at least 1 ms"));
            }
            ms
        }
        None => 0,
    };
    let action = match code {
        PL_FAULT_ACTION_FAIL => {
            let sv = required("status")?;
            let name = string(rule, "status", sv)?;
            let status = Status::ALL
                .iter()
                .copied()
                .find(|s| *s != Status::Ok && s.name() == name)
                .ok_or_else(|| {
                    err(
                        rule,
                        "status",
                        sv,
                        "unknown status (a PL_S_ name without the prefix: EIO, ENOMEM, ...)",
                    )
                })?;
            Action::Fail(status)
        }
        PL_FAULT_ACTION_DELAY => Action::Delay(ms),
        PL_FAULT_ACTION_DROP => Action::Drop,
        PL_FAULT_ACTION_DUPLICATE => Action::Duplicate,
        PL_FAULT_ACTION_REORDER => Action::Reorder,
        PL_FAULT_ACTION_REVOKE_MR => Action::RevokeMr,
        PL_FAULT_ACTION_SPURIOUS_BREAK => Action::SpuriousBreak,
        PL_FAULT_ACTION_WITHHOLD => Action::Withhold(ms),
        PL_FAULT_ACTION_NEEDS_RESET => Action::NeedsReset,
        PL_FAULT_ACTION_ABORT => Action::Abort,
        // `code` came from FAULT_ACTIONS, whose every row is an arm above
        // (the test below parses each).
        other => unreachable!("FAULT_ACTIONS code {other} has no Action"),
    };
    if !action.allowed_at(point) {
        return Err(err(
            rule,
            "action",
            av,
            &format!("does not apply at point {point}"),
        ));
    }
    let probability = match t.get("probability") {
        None => 1.0,
        Some(v) => {
            let p = match v {
                toml::Value::Float(f) => *f,
                toml::Value::Integer(i) => *i as f64,
                _ => return Err(err(rule, "probability", v, "must be a number")),
            };
            if !(p > 0.0 && p <= 1.0) {
                return Err(err(
                    rule,
                    "probability",
                    v,
                    "out of range (0 < probability <= 1)",
                ));
            }
            p
        }
    };
    let skip = t.get("skip").map_or(Ok(0), |v| unsigned(rule, "skip", v))?;
    let count = t
        .get("count")
        .map_or(Ok(0), |v| unsigned(rule, "count", v))?;
    Ok(RuleSpec {
        point,
        action,
        probability,
        skip,
        count,
    })
}

/// Parses and validates a whole plan file's text.
pub fn parse_plan(text: &str) -> Result<Plan, PlanError> {
    let top: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| PlanError(format!("not valid TOML: {}", e.message())))?;
    let mut plan = Plan::default();
    for (k, v) in &top {
        match k.as_str() {
            "seed" => {
                plan.seed = match v.as_integer() {
                    // A u64 seed above i64::MAX cannot be written in TOML;
                    // negative values are refused rather than wrapped.
                    Some(i) if i >= 0 => i as u64,
                    _ => {
                        return Err(PlanError(format!(
                            "top level: key \"seed\" = {}: must be a non-negative integer",
                            shown(v)
                        )))
                    }
                }
            }
            "rule" => {
                let Some(rules) = v.as_array() else {
                    return Err(PlanError(format!(
                        "top level: key \"rule\" = {}: must be an array of tables ([[rule]])",
                        shown(v)
                    )));
                };
                for (i, r) in rules.iter().enumerate() {
                    let Some(t) = r.as_table() else {
                        return Err(PlanError(format!(
                            "rule {}: value {} is not a table",
                            i + 1,
                            shown(r)
                        )));
                    };
                    plan.rules.push(parse_rule(i + 1, t)?);
                }
            }
            other => {
                return Err(PlanError(format!(
                    "top level: key \"{other}\" = {}: unknown key (known: seed, rule)",
                    shown(v)
                )))
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_abi_action_parses_to_the_action_with_its_code() {
        for &(code, _, name) in FAULT_ACTIONS {
            // The point every action applies at, and the keys each needs.
            let extra = match code {
                PL_FAULT_ACTION_FAIL => "status = \"EIO\"\n",
                PL_FAULT_ACTION_DELAY | PL_FAULT_ACTION_WITHHOLD => "ms = 5\n",
                _ => "",
            };
            let plan = one(&format!(
                "point = \"lease-break\"\naction = \"{name}\"\n{extra}"
            ))
            .or_else(|_| {
                one(&format!(
                    "point = \"request:NOP:after\"\naction = \"{name}\"\n{extra}"
                ))
            })
            .unwrap_or_else(|e| panic!("action {name}: {e:?}"));
            let action = plan.rules[0].action;
            assert_eq!((action.code(), action.name()), (code, name));
        }
    }

    #[test]
    fn event_points_are_the_abi_kinds_but_the_two_that_report_faults() {
        for &(kind, _) in crate::abi::EVENT_KINDS {
            let name = event_kind_name(kind).unwrap();
            let point = Point::parse(&format!("event:{name}"));
            if UNFAULTABLE_EVENTS.contains(&kind) {
                assert_eq!(point, None, "event:{name} must be refused");
            } else {
                assert_eq!(point, Some(Point::Event(Some(kind))), "event:{name}");
                assert_eq!(point.unwrap().to_string(), format!("event:{name}"));
            }
        }
        assert_eq!(Point::parse("event:NOPE"), None);
    }

    fn one(rule: &str) -> Result<Plan, PlanError> {
        parse_plan(&format!("[[rule]]\n{rule}"))
    }

    fn error_of(rule: &str) -> String {
        one(rule).expect_err(rule).0
    }

    #[test]
    fn parses_every_action() {
        let plan = parse_plan(
            r#"
seed = 7
[[rule]]
point = "request:REG_MR:before"
action = "fail"
status = "ENOMEM"
probability = 0.25
skip = 2
count = 1
[[rule]]
point = "event:*"
action = "delay"
ms = 200
[[rule]]
point = "request:*:after"
action = "duplicate"
[[rule]]
point = "lease-break"
action = "withhold"
ms = 0
[[rule]]
point = "memory-map"
action = "needs-reset"
"#,
        )
        .unwrap();
        assert_eq!(plan.seed, 7);
        assert_eq!(
            plan.rules[0],
            RuleSpec {
                point: Point::Request {
                    op: Some(Opcode::RegMr),
                    after: false
                },
                action: Action::Fail(Status::NoMem),
                probability: 0.25,
                skip: 2,
                count: 1,
            }
        );
        assert_eq!(plan.rules[1].action, Action::Delay(200));
        assert_eq!(plan.rules[1].point, Point::Event(None));
        assert_eq!(plan.rules[3].action, Action::Withhold(0));
        assert_eq!(plan.rules[4].point, Point::MemoryMap);
        assert_eq!(parse_plan("").unwrap(), Plan::default());
    }

    #[test]
    fn errors_name_rule_key_and_value() {
        let cases = [
            (
                "point = \"request:REG_MR:before\"\naction = \"drop\"\ncolour = \"red\"",
                ["rule 1", "\"colour\"", "\"red\"", "unknown key"],
            ),
            (
                "point = \"request:REG_MR:before\"\naction = \"drop\"\nskip = \"two\"",
                ["rule 1", "\"skip\"", "\"two\"", "integer"],
            ),
            (
                "point = \"request:REG_MR:before\"\naction = \"drop\"\nprobability = 1.5",
                ["rule 1", "\"probability\"", "1.5", "out of range"],
            ),
            (
                "point = \"request:REG_MR:before\"\naction = \"drop\"\nprobability = 0.0",
                ["rule 1", "\"probability\"", "0.0", "out of range"],
            ),
            (
                "point = \"request:REG_MR:before\"\naction = \"duplicate\"",
                ["rule 1", "\"action\"", "\"duplicate\"", "does not apply"],
            ),
            (
                "point = \"memory-map\"\naction = \"fail\"\nstatus = \"EIO\"",
                ["rule 1", "\"action\"", "\"fail\"", "does not apply"],
            ),
            (
                "point = \"request:FROB:before\"\naction = \"drop\"",
                [
                    "rule 1",
                    "\"point\"",
                    "\"request:FROB:before\"",
                    "unknown point",
                ],
            ),
            (
                "point = \"event:*\"\naction = \"explode\"",
                ["rule 1", "\"action\"", "\"explode\"", "unknown action"],
            ),
            (
                "point = \"request:NOP:before\"\naction = \"fail\"\nstatus = \"EWHAT\"",
                ["rule 1", "\"status\"", "\"EWHAT\"", "unknown status"],
            ),
            (
                "point = \"request:NOP:before\"\naction = \"fail\"",
                ["rule 1", "\"status\"", "missing", "none"],
            ),
            (
                "point = \"request:NOP:before\"\naction = \"drop\"\nms = 5",
                ["rule 1", "\"ms\"", "5", "takes no"],
            ),
            (
                "point = \"event:*\"\naction = \"delay\"\nms = -1",
                ["rule 1", "\"ms\"", "-1", "negative"],
            ),
            (
                "point = 3\naction = \"drop\"",
                ["rule 1", "\"point\"", "3", "string"],
            ),
        ];
        for (rule, words) in cases {
            let e = error_of(rule);
            for w in words {
                assert!(e.contains(w), "error {e:?} for {rule:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn errors_name_the_right_rule_and_top_level_keys() {
        let e = parse_plan(
            "[[rule]]\npoint = \"event:*\"\naction = \"drop\"\n[[rule]]\npoint = \"event:*\"\naction = \"withhold\"\nms = 1",
        )
        .unwrap_err()
        .0;
        assert!(
            e.starts_with("rule 2: key \"action\" = \"withhold\""),
            "{e}"
        );
        let e = parse_plan("sede = 3").unwrap_err().0;
        assert!(
            e.contains("\"sede\"") && e.contains('3') && e.contains("unknown key"),
            "{e}"
        );
        let e = parse_plan("seed = -3").unwrap_err().0;
        assert!(e.contains("\"seed\" = -3"), "{e}");
        let e = parse_plan("seed = [").unwrap_err().0;
        assert!(e.contains("not valid TOML"), "{e}");
    }

    #[test]
    fn point_codes_and_matching() {
        let hit = Point::Request {
            op: Some(Opcode::RegMr),
            after: true,
        };
        assert_eq!(hit.code(), 1 << 16 | (7 * 2 + 1));
        assert_eq!(Point::Event(Some(2)).code(), 2 << 16 | 2);
        assert_eq!(Point::LeaseBreak.code(), 5 << 16);
        assert!(Point::parse("request:*:after").unwrap().matches(hit));
        assert!(!Point::parse("request:*:before").unwrap().matches(hit));
        assert!(!Point::parse("request:NOP:after").unwrap().matches(hit));
        assert!(Point::parse("event:*")
            .unwrap()
            .matches(Point::Event(Some(4))));
        for s in [
            "request:REG_MR:after",
            "event:LEASE_LOST",
            "memory-map",
            "lease-break",
        ] {
            assert_eq!(Point::parse(s).unwrap().to_string(), s);
        }
    }
}
