//! The `admin` target: the admin socket's request handling
//! (`pinlease::admin::answer`) over a `ServerState` with a connected device,
//! one input line per request, as the socket reads them.
//!
//! Checks: every reply is a JSON object whose `"ok"` is a boolean; a line
//! that is not JSON, not an object or has no string `"cmd"` is refused; and
//! the fault plan the state holds moves as the commands say: fault-add
//! appends a rule with the next id (fault-list shows it), fault-clear removes
//! the rule named (or all), fault-load replaces rules and seed, and a
//! refused command changes nothing.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use pinlease::admin::{answer, MAX_REQUEST_BYTES};
use pinlease::faults::FaultsStatus;
use pinlease::model::{Device, Limits};
use pinlease::state::ServerState;
use serde_json::{json, Value};

/// Lines a run answers at most.
const MAX_LINES: usize = 32;

fn faults(state: &ServerState) -> FaultsStatus {
    state.faults.status()
}

fn ok(reply: &Value) -> bool {
    let obj = reply
        .as_object()
        .unwrap_or_else(|| panic!("reply is not an object: {reply}"));
    match obj.get("ok") {
        Some(Value::Bool(b)) => {
            if !b {
                assert!(
                    obj.get("error").and_then(Value::as_str).is_some(),
                    "a refusal without an error string: {reply}"
                );
            }
            *b
        }
        other => panic!("reply's \"ok\" is {other:?}, not a boolean: {reply}"),
    }
}

/// Answers one line as the socket does (`admin::serve_client`), checking
/// the reply and the state change.
fn line(state: &ServerState, text: &str) {
    let req = match serde_json::from_str::<Value>(text.trim()) {
        Ok(v) => v,
        // The socket answers {"ok": false, ...} itself; nothing to check.
        Err(_) => return,
    };
    let cmd = req.get("cmd").and_then(Value::as_str).map(str::to_string);
    // fault-now abort aborts the daemon on purpose (docs/faults.md 1.3).
    if cmd.as_deref() == Some("fault-now") && req.get("action") == Some(&json!("abort")) {
        return;
    }
    let before = faults(state);
    let reply = answer(state, &req);
    let accepted = ok(&reply);
    let after = faults(state);
    let Some(cmd) = cmd else {
        assert!(!accepted, "request without a string cmd accepted: {req}");
        assert_eq!(before, after);
        return;
    };
    if !accepted {
        assert_eq!(before.rules, after.rules, "refused {cmd} changed the rules");
        assert_eq!(before.seed, after.seed, "refused {cmd} changed the seed");
        return;
    }
    match cmd.as_str() {
        "status" => {
            assert!(reply.get("status").is_some_and(Value::is_object));
            let f: FaultsStatus = serde_json::from_value(reply["faults"].clone())
                .expect("status carries the fault plan");
            assert_eq!(f.rules, after.rules);
        }
        "fault-list" => {
            let f: FaultsStatus = serde_json::from_value(reply["faults"].clone())
                .expect("fault-list carries the fault plan");
            assert_eq!(f, after, "fault-list differs from the engine's status");
        }
        "fault-add" => {
            let id = reply["id"].as_u64().expect("fault-add answers an id") as u32;
            assert_eq!(after.rules.len(), before.rules.len() + 1);
            let added = after.rules.last().unwrap();
            assert_eq!(added.id, id, "the new rule is last, with the id answered");
            assert!(
                before.rules.iter().all(|r| r.id < id),
                "rule ids grow: {id} after {:?}",
                before.rules
            );
            assert_eq!(&after.rules[..before.rules.len()], &before.rules[..]);
            let spec = &req["rule"];
            assert_eq!(added.point, spec["point"].as_str().unwrap());
            assert_eq!(added.action, spec["action"].as_str().unwrap());
            assert!(added.probability > 0.0 && added.probability <= 1.0);
        }
        "fault-clear" => {
            let n = reply["cleared"]
                .as_u64()
                .expect("fault-clear answers a count") as usize;
            match req.get("id").and_then(Value::as_u64) {
                Some(id) => {
                    assert_eq!(n, 1);
                    assert!(before.rules.iter().any(|r| u64::from(r.id) == id));
                    assert!(!after.rules.iter().any(|r| u64::from(r.id) == id));
                    assert_eq!(after.rules.len(), before.rules.len() - 1);
                }
                None => {
                    assert_eq!(n, before.rules.len());
                    assert!(after.rules.is_empty());
                }
            }
        }
        "fault-load" => {
            let plan = pinlease::faults::parse_plan(req["plan"].as_str().unwrap())
                .expect("an accepted plan parses");
            assert_eq!(reply["rules"].as_u64(), Some(plan.rules.len() as u64));
            assert_eq!(reply["seed"].as_u64(), Some(plan.seed));
            assert_eq!(after.seed, plan.seed);
            let ids: Vec<u32> = after.rules.iter().map(|r| r.id).collect();
            let want: Vec<u32> = (1..=plan.rules.len() as u32).collect();
            assert_eq!(ids, want, "a loaded plan's rules are numbered from 1");
        }
        "fault-now" => {}
        other => panic!("unknown command {other:?} accepted"),
    }
}

/// Runs the lines of `data` (a line longer than the socket's limit ends
/// the run, as it ends the socket's client).
pub fn run(data: &[u8]) {
    let state = ServerState::new().expect("server state");
    let dev = Arc::new(Device::new(Limits::default()));
    // ServerState::new() has one frontend slot: the connected device.
    let slot = &state.frontends[0];
    *slot.device.lock().unwrap() = Some(dev);
    slot.connected.store(true, Ordering::SeqCst);
    let text = String::from_utf8_lossy(data);
    for l in text.split('\n').take(MAX_LINES) {
        if l.len() > MAX_REQUEST_BYTES {
            return;
        }
        line(&state, l);
    }
}

/// Seeds: every command, accepted and refused.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let rule = |point: &str, action: &str, extra: Value| {
        let mut r = json!({"point": point, "action": action});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        json!({"cmd": "fault-add", "rule": r})
    };
    let sets: Vec<(&str, Vec<Value>)> = vec![
        ("status", vec![json!({"cmd": "status"})]),
        ("fault_list", vec![json!({"cmd": "fault-list"})]),
        (
            "fault_add_list_clear",
            vec![
                rule(
                    "request:REG_MR:before",
                    "fail",
                    json!({"status": "ENOMEM", "probability": 0.5, "skip": 1, "count": 2}),
                ),
                rule("event:*", "delay", json!({"ms": 20})),
                rule("lease-break", "withhold", json!({"ms": 0})),
                json!({"cmd": "fault-list"}),
                json!({"cmd": "fault-clear", "id": 2}),
                json!({"cmd": "fault-clear", "id": 2}),
                json!({"cmd": "fault-clear"}),
                json!({"cmd": "fault-list"}),
            ],
        ),
        (
            "fault_load",
            vec![
                json!({"cmd": "fault-load", "plan": "seed = 9\n[[rule]]\npoint = \"request:*:after\"\naction = \"duplicate\"\n"}),
                json!({"cmd": "fault-load", "plan": "seed = -1\n"}),
                json!({"cmd": "status"}),
            ],
        ),
        (
            "fault_now",
            vec![
                json!({"cmd": "fault-now", "action": "revoke-mr"}),
                json!({"cmd": "fault-now", "action": "spurious-break"}),
                json!({"cmd": "fault-now", "action": "needs-reset"}),
                json!({"cmd": "fault-now", "action": "bogus"}),
            ],
        ),
        (
            "refused",
            vec![
                json!({"cmd": "nope"}),
                json!({"nocmd": 1}),
                json!([1, 2]),
                json!({"cmd": "fault-add", "rule": "x"}),
                rule("request:NOPE:before", "drop", json!({})),
                json!({"cmd": "fault-clear", "id": -1}),
                json!({"cmd": "fault-load"}),
            ],
        ),
    ];
    sets.into_iter()
        .map(|(name, lines)| {
            let text: Vec<String> = lines.iter().map(Value::to_string).collect();
            (name.to_string(), (text.join("\n") + "\n").into_bytes())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_runs_clean() {
        for (_, s) in seeds() {
            run(&s);
        }
    }

    #[test]
    fn a_reply_without_ok_is_caught() {
        let caught = std::panic::catch_unwind(|| ok(&json!({"error": "x"})));
        assert!(caught.is_err());
        assert!(!ok(&json!({"ok": false, "error": "x"})));
    }
}
