//! End-to-end tests of the daemon's fault plans (docs/faults.md section 1)
//! against the real `pinlease serve` binary: every action, every point
//! class, FAULT_INJECTED events, `pinlease inject`, `--faults` errors, the
//! abort report and the status output.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::mr::dma;
use common::*;
use pinlease_abi::*;
use pinlease_testkit::frontend::client::{encode_request, Client, RegMrArgs};
use pinlease_testkit::frontend::{Desc, FrontendError};
use serde_json::Value;

/// A plan file that lives as long as the test.
fn plan_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn daemon_with_plan(text: &str, extra: &[&str]) -> (Daemon, tempfile::NamedTempFile) {
    let f = plan_file(text);
    let mut args = vec!["--faults", f.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    (Daemon::start_with(&args), f)
}

/// A daemon under the plan `text`, and a client with event buffers posted.
fn start_with_plan(text: &str) -> (Daemon, tempfile::NamedTempFile, Client) {
    let (d, f) = daemon_with_plan(text, &[]);
    let c = d.client_with_events(64);
    (d, f, c)
}

fn inject(d: &Daemon, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pinlease"))
        .args(["inject", "--admin-socket"])
        .arg(d.admin())
        .args(args)
        .env_remove("PINLEASE_ADMIN_SOCKET")
        .output()
        .unwrap()
}

#[track_caller]
fn inject_ok(d: &Daemon, args: &[&str]) -> String {
    let out = inject(d, args);
    assert!(
        out.status.success(),
        "pinlease inject {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn inject_err(d: &Daemon, args: &[&str]) -> String {
    let out = inject(d, args);
    assert!(!out.status.success(), "pinlease inject {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Reads events until one of `kind` arrives (others are returned too).
#[track_caller]
fn event_of(c: &mut Client, kind: u16) -> PlEvent {
    let t = Instant::now();
    loop {
        let e = expect_event(c, &format!("kind {kind}"));
        if e.kind == kind {
            return e;
        }
        assert!(t.elapsed() < T, "no event of kind {kind}");
    }
}

fn point_request(op: Opcode, after: bool) -> u64 {
    1 << 16 | (op as u64 * 2 + u64::from(after))
}

/// Submits a request chain by hand (so several can be in flight); returns
/// its head.
fn submit(c: &mut Client, op: Opcode, ctx: u64, tag: u64, body: &[u8]) -> u16 {
    let req = encode_request(op as u16, ctx, tag, body);
    let cap = (16 + op.response_body_len()) as u32;
    let fe = c.frontend_mut();
    let rq = fe.alloc(req.len() as u64, 16).unwrap();
    fe.write_mem(rq, &req).unwrap();
    let rs = fe.alloc(u64::from(cap), 16).unwrap();
    let head = fe
        .submit_chain(
            0,
            &[
                Desc::readable(rq, req.len() as u32),
                Desc::writable(rs, cap),
            ],
        )
        .unwrap();
    fe.kick(0).unwrap();
    head
}

fn rules(d: &Daemon) -> Vec<Value> {
    d.status()["faults"]["rules"].as_array().cloned().unwrap()
}

#[test]
fn fail_before_leaves_the_model_alone_and_fail_after_lies() {
    let (mut d, _f, mut c) = start_with_plan(
        r#"
[[rule]]
point = "request:REG_MR:before"
action = "fail"
status = "ENOMEM"
count = 1
[[rule]]
point = "request:LEASE_TAKE:after"
action = "fail"
status = "EIO"
count = 1
"#,
    );
    let ctx = c.create_context(1, "fail").unwrap();
    let pages = c.alloc_pages(1).unwrap();
    let r = c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages));
    assert_eq!(status_of(r), Status::NoMem);
    assert!(d.device()["mrs"].as_array().unwrap().is_empty());
    let e = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(e.ctx, ctx);
    assert_eq!(
        e.args,
        [
            point_request(Opcode::RegMr, false),
            1,
            1,
            Status::NoMem as u64
        ]
    );
    // count = 1: the next one goes through.
    c.reg_mr(ctx, &RegMrArgs::pages(PL_ACCESS_ALL, &pages))
        .unwrap();
    let r = c.lease_take(ctx, &lease_req(file(1), 0, 4096, PL_POLICY_REVOKE));
    assert_eq!(status_of(r), Status::Io);
    // The effect stays: the device lied.
    assert_eq!(d.device()["leases"].as_array().unwrap().len(), 1);
    let e = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(
        e.args,
        [
            point_request(Opcode::LeaseTake, true),
            1,
            2,
            Status::Io as u64
        ]
    );
    let r = rules(&d);
    assert_eq!(
        (r[0]["hits"].as_u64(), r[0]["fires"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(d
        .log()
        .contains("fault injected: rule 1 request:REG_MR:before fail ENOMEM ctx"));
    d.assert_healthy();
}

#[test]
fn delay_holds_one_completion_without_blocking_the_next() {
    let (mut d, _f, mut c) = start_with_plan(
        "[[rule]]\npoint = \"request:NOP:after\"\naction = \"delay\"\nms = 600\ncount = 1\n",
    );
    let t0 = Instant::now();
    let slow = submit(&mut c, Opcode::Nop, 0, 77, &[]);
    c.nop().unwrap();
    let second = t0.elapsed();
    assert!(
        second < Duration::from_millis(400),
        "second NOP took {second:?}"
    );
    let e = c.frontend_mut().wait_used(0, T).unwrap().unwrap();
    assert_eq!(e.id, slow);
    let first = t0.elapsed();
    assert!(
        first >= Duration::from_millis(600),
        "delayed NOP came after {first:?}"
    );
    eprintln!("delay 600 ms: second NOP answered in {second:?}, delayed one after {first:?}");
    let e = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(e.args, [point_request(Opcode::Nop, true), 2, 1, 600]);
    d.assert_healthy();
}

#[test]
fn drop_never_completes_and_duplicate_shows_twice_in_the_used_ring() {
    let (mut d, _f, mut c) = start_with_plan(
        r#"
[[rule]]
point = "request:NOP:before"
action = "drop"
count = 1
[[rule]]
point = "request:QUERY_DEVICE:after"
action = "duplicate"
count = 1
"#,
    );
    let dropped = submit(&mut c, Opcode::Nop, 0, 5, &[]);
    assert_eq!(c.frontend_mut().wait_used(0, QUIET).unwrap(), None);
    assert_eq!(c.frontend().in_flight(0).unwrap(), 1);
    let e = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(e.args, [point_request(Opcode::Nop, false), 3, 1, 0]);
    let q = submit(&mut c, Opcode::QueryDevice, 0, 6, &[]);
    assert_ne!(q, dropped);
    let first = c.frontend_mut().wait_used(0, T).unwrap().unwrap();
    assert_eq!(first.id, q);
    // The second copy names a head that is no longer in flight: what a
    // guest's virtio core calls "not a head".
    match c.frontend_mut().wait_used(0, T) {
        Err(FrontendError::BadUsedId { id, .. }) => assert_eq!(id, u32::from(q)),
        other => panic!("expected the duplicate used element, got {other:?}"),
    }
    d.assert_healthy();
}

#[test]
fn reorder_writes_after_the_next_completion_or_alone_after_100ms() {
    let (mut d, _f, mut c) = start_with_plan(
        "[[rule]]\npoint = \"request:NOP:after\"\naction = \"reorder\"\ncount = 2\n",
    );
    let a = submit(&mut c, Opcode::Nop, 0, 1, &[]);
    // Give the worker time to hold A before B arrives.
    std::thread::sleep(Duration::from_millis(20));
    let b = submit(&mut c, Opcode::QueryDevice, 0, 2, &[]);
    let fe = c.frontend_mut();
    let first = fe.wait_used(0, T).unwrap().unwrap().id;
    let second = fe.wait_used(0, T).unwrap().unwrap().id;
    assert_eq!(
        (first, second),
        (b, a),
        "B must come before the reordered A"
    );
    let t0 = Instant::now();
    let alone = submit(&mut c, Opcode::Nop, 0, 3, &[]);
    let e = c.frontend_mut().wait_used(0, T).unwrap().unwrap();
    let waited = t0.elapsed();
    assert_eq!(e.id, alone);
    assert!(
        waited >= Duration::from_millis(100),
        "came alone after {waited:?}"
    );
    eprintln!("reorder alone: written after {waited:?}");
    d.assert_healthy();
}

#[test]
fn revoke_mr_revokes_the_named_mr_with_reason_injected() {
    let (mut d, _f, mut c) = start_with_plan(
        "[[rule]]\npoint = \"request:WRITE:before\"\naction = \"revoke-mr\"\ncount = 1\n",
    );
    let ctx = c.create_context(1, "revoke").unwrap();
    let (a, _) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    let (b, _) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    assert_eq!(
        status_of(c.write(ctx, &dma(a, 0, b, 0, 64))),
        Status::Canceled
    );
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(fi.ctx, ctx);
    assert_eq!(fi.args, [point_request(Opcode::Write, false), 6, 1, a]);
    let rv = event_of(&mut c, PL_EVENT_MR_REVOKED);
    assert_eq!((rv.args[0], rv.args[1]), (a, PL_REVOKE_INJECTED));
    // The other MR is untouched; DMA on the revoked one stays ECANCELED.
    assert_eq!(
        status_of(c.write(ctx, &dma(b, 0, a, 0, 64))),
        Status::Canceled
    );
    let st = d.device();
    assert_eq!(st["counters"]["revokes"].as_u64(), Some(1));
    d.assert_healthy();
}

#[test]
fn spurious_break_applies_the_revoke_and_wait_policies() {
    let (mut d, _f, mut c) = start_with_plan(
        "[[rule]]\npoint = \"request:NOP:before\"\naction = \"spurious-break\"\ncount = 1\n",
    );
    let ctx = c.create_context(1, "break").unwrap();
    let revoke = c
        .lease_take(ctx, &lease_req(file(1), 0, 1 << 20, PL_POLICY_REVOKE))
        .unwrap();
    let pages = c.alloc_pages(1).unwrap();
    let mut args = RegMrArgs::pages(PL_ACCESS_ALL, &pages);
    args.file = Some((file(1), 0));
    let mr = c.reg_mr(ctx, &args).unwrap();
    assert_eq!(mr.lease, revoke);
    // Runtime point: the only ACTIVE lease is the revoke one.
    inject_ok(&d, &["now", "--action", "spurious-break"]);
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(fi.args, [6 << 16, 7, 0, revoke]);
    let rv = event_of(&mut c, PL_EVENT_MR_REVOKED);
    assert_eq!((rv.args[0], rv.args[1]), (mr.key, PL_REVOKE_LEASE_BREAK));
    let br = event_of(&mut c, PL_EVENT_LEASE_BROKEN);
    assert_eq!(
        br.args[..3],
        [
            revoke,
            u64::from(PL_BREAK_INJECTED),
            u64::from(PL_POLICY_REVOKE)
        ]
    );
    // A wait-policy lease, broken by the rule at a request point.
    let wait = c
        .lease_take(ctx, &lease_req(file(2), 0, 1 << 20, PL_POLICY_WAIT))
        .unwrap();
    c.nop().unwrap();
    let br = event_of(&mut c, PL_EVENT_LEASE_BROKEN);
    assert_eq!(
        br.args[..3],
        [
            wait,
            u64::from(PL_BREAK_INJECTED),
            u64::from(PL_POLICY_WAIT)
        ]
    );
    let st = d.device();
    let l = find_by_handle(&st["leases"], "handle", wait).unwrap();
    assert_eq!(l["state"], "breaking");
    d.assert_healthy();
}

#[test]
fn withhold_at_lease_break_holds_or_never_answers() {
    let (mut d, _f, mut c) = start_with_plan("[[rule]]\npoint = \"lease-break\"\naction = \"withhold\"\nms = 0\ncount = 1\n[[rule]]\npoint = \"lease-break\"\naction = \"withhold\"\nms = 300\n");
    let ctx = c.create_context(1, "withhold").unwrap();
    let l1 = c
        .lease_take(ctx, &lease_req(file(1), 0, 4096, PL_POLICY_REVOKE))
        .unwrap();
    let body = break_req(file(1), 0, 4096, PL_BREAK_TRUNCATE);
    let held = submit(&mut c, Opcode::LeaseBreak, 0, 9, body.as_bytes());
    assert_eq!(c.frontend_mut().wait_used(0, QUIET).unwrap(), None);
    // The break took effect all the same.
    let st = d.device();
    assert_eq!(
        find_by_handle(&st["leases"], "handle", l1).unwrap()["state"],
        "revoked"
    );
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(fi.args, [5 << 16, 8, 1, 0]);
    // Rule 1 is used up; rule 2 holds the next answer for 300 ms.
    c.lease_take(ctx, &lease_req(file(2), 0, 4096, PL_POLICY_REVOKE))
        .unwrap();
    let t0 = Instant::now();
    c.lease_break(&break_req(file(2), 0, 4096, PL_BREAK_TRUNCATE))
        .unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?}"
    );
    assert_eq!(
        c.frontend().in_flight(0).unwrap(),
        1,
        "chain {held} stays unanswered"
    );
    d.assert_healthy();
}

#[test]
fn needs_reset_answers_eio_until_the_device_is_reset() {
    let (mut d, _f, mut c) = start_with_plan(
        "[[rule]]\npoint = \"context-teardown\"\naction = \"needs-reset\"\ncount = 1\n",
    );
    let ctx = c.create_context(1, "reset").unwrap();
    c.alloc_mr(ctx, 2, PL_ACCESS_ALL).unwrap();
    assert_eq!(status_of(c.close_context(ctx)), Status::Io);
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(fi.args, [4 << 16, 9, 1, 0]);
    let nr = event_of(&mut c, PL_EVENT_NEEDS_RESET);
    assert_eq!(nr.args, [1, 0, 0, 0]);
    assert_eq!(status_of(c.nop()), Status::Io);
    assert_eq!(status_of(c.create_context(2, "x")), Status::Io);
    // Each refusal repeats NEEDS_RESET (a status bit stays set until the
    // reset), so a driver that lost the first event still learns why.
    for refused in ["NOP", "CREATE_CONTEXT"] {
        let again = event_of(&mut c, PL_EVENT_NEEDS_RESET);
        assert_eq!(again.args, [1, 0, 0, 0], "after the refused {refused}");
    }
    let st = d.device();
    assert_eq!(st["needs_reset"], true);
    assert_eq!(
        st["mrs"].as_array().unwrap().len(),
        1,
        "close had no effect"
    );
    let text = String::from_utf8(d.status_cli(false).stdout).unwrap();
    assert!(text.contains("NEEDS RESET"), "{text}");
    c.frontend_mut().reset_device().unwrap();
    c.nop().unwrap();
    let st = d.device();
    assert_eq!(st["needs_reset"], false);
    assert!(st["contexts"].as_array().unwrap().is_empty());
    assert_eq!(st["pinned_pages"].as_u64(), Some(0));
    let ctx2 = c.create_context(2, "fresh").unwrap();
    c.close_context(ctx2).unwrap();
    d.assert_healthy();
}

#[test]
fn abort_writes_the_report_and_dies_of_sigabrt() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("abort.json");
    let (mut d, _f) = daemon_with_plan(
        "[[rule]]\npoint = \"request:DEREG_MR:before\"\naction = \"abort\"\n",
        &["--abort-report", report.to_str().unwrap()],
    );
    let mut c = d.client_with_events(64);
    let ctx = c.create_context(1, "abort").unwrap();
    let (key, _) = c.alloc_mr(ctx, 3, PL_ACCESS_ALL).unwrap();
    let lease = c
        .lease_take(ctx, &lease_req(file(1), 0, 4096, PL_POLICY_WAIT))
        .unwrap();
    let _ = submit(
        &mut c,
        Opcode::DeregMr,
        ctx,
        1,
        PlHandleReq { handle: key }.as_bytes(),
    );
    let st = d.wait_exit(T);
    assert_eq!(st.signal(), Some(libc::SIGABRT), "exit status {st:?}");
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        find_by_handle(&r["status"]["mrs"], "key", key).is_some(),
        "{r}"
    );
    assert!(
        find_by_handle(&r["status"]["leases"], "handle", lease).is_some(),
        "{r}"
    );
    assert_eq!(r["status"]["pinned_pages"].as_u64(), Some(3));
    assert_eq!(r["faults"]["rules"][0]["fires"].as_u64(), Some(1));
    let log = d.log();
    assert!(
        log.contains("abort by fault rule 1 at request:DEREG_MR:before: 1 context(s), 1 MR(s), 3 pinned page(s), leases active 1"),
        "{log}"
    );
}

#[test]
fn event_and_memory_map_points() {
    let (mut d, _f, mut c) = start_with_plan(
        r#"
[[rule]]
point = "event:CONTEXT_TORN_DOWN"
action = "drop"
[[rule]]
point = "event:MR_REVOKED"
action = "duplicate"
count = 1
[[rule]]
point = "memory-map"
action = "revoke-mr"
skip = 1
count = 1
[[rule]]
point = "event:LEASE_BROKEN"
action = "delay"
ms = 300
"#,
    );
    let ctx = c.create_context(1, "events").unwrap();
    let (key, _) = c.alloc_mr(ctx, 1, PL_ACCESS_ALL).unwrap();
    // The first memory map (at connect) was skipped; this one fires.
    c.frontend_mut().set_mem_table_again().unwrap();
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(fi.args, [3 << 16, 6, 3, key]);
    // The MR_REVOKED is duplicated (rule 2 fired on it first).
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(fi.args, [2 << 16 | u64::from(PL_EVENT_MR_REVOKED), 4, 2, 0]);
    let a = event_of(&mut c, PL_EVENT_MR_REVOKED);
    let b = expect_event(&mut c, "the duplicate MR_REVOKED");
    assert_eq!((a.kind, a.args), (b.kind, b.args));
    assert_eq!(a.args[1], PL_REVOKE_INJECTED);
    // CONTEXT_TORN_DOWN is dropped: only the FAULT_INJECTED arrives.
    let ctx2 = c.create_context(2, "gone").unwrap();
    c.close_context(ctx2).unwrap();
    let fi = expect_event(&mut c, "FAULT_INJECTED for the drop");
    assert_eq!(fi.kind, PL_EVENT_FAULT_INJECTED);
    assert_eq!(
        fi.args[..3],
        [2 << 16 | u64::from(PL_EVENT_CONTEXT_TORN_DOWN), 3, 1]
    );
    expect_no_event(&mut c);
    // A delayed LEASE_BROKEN arrives at least 300 ms after the break.
    c.lease_take(ctx, &lease_req(file(1), 0, 4096, PL_POLICY_REVOKE))
        .unwrap();
    let t0 = Instant::now();
    c.lease_break(&break_req(file(1), 0, 4096, PL_BREAK_TRUNCATE))
        .unwrap();
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(fi.args[1..], [2, 4, 300]);
    let br = event_of(&mut c, PL_EVENT_LEASE_BROKEN);
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(br.args[1], u64::from(PL_BREAK_TRUNCATE));
    let inj = d.status()["faults"]["injected"].clone();
    let count = |class: &str, action: &str| {
        inj.as_array()
            .unwrap()
            .iter()
            .find(|i| i["class"] == class && i["action"] == action)
            .and_then(|i| i["count"].as_u64())
    };
    assert_eq!(count("memory-map", "revoke-mr"), Some(1));
    assert_eq!(count("event", "duplicate"), Some(1));
    assert_eq!(count("event", "drop"), Some(1));
    assert_eq!(count("event", "delay"), Some(1));
    d.assert_healthy();
}

#[test]
fn inject_cli_add_list_clear_load_now_and_bad_input() {
    let d = Daemon::start();
    // now without a frontend
    let e = inject_err(&d, &["now", "--action", "needs-reset"]);
    assert!(e.contains("no frontend is connected"), "{e}");
    let out = inject_ok(
        &d,
        &[
            "add",
            "--point",
            "request:NOP:before",
            "--action",
            "fail",
            "--status",
            "EBUSY",
            "--count",
            "1",
        ],
    );
    assert_eq!(out.trim(), "rule 1");
    let out = inject_ok(
        &d,
        &[
            "add",
            "--point",
            "event:*",
            "--action",
            "delay",
            "--ms",
            "5",
            "--probability",
            "0.5",
        ],
    );
    assert_eq!(out.trim(), "rule 2");
    let list = inject_ok(&d, &["list"]);
    assert!(
        list.contains("request:NOP:before") && list.contains("EBUSY"),
        "{list}"
    );
    assert!(
        list.contains("event:*") && list.contains("5ms") && list.contains("0.5"),
        "{list}"
    );
    // Bad input: each error names the key and the value.
    for (args, words) in [
        (
            vec![
                "add",
                "--point",
                "request:NOP:before",
                "--action",
                "explode",
            ],
            vec!["rule 3", "\"action\"", "\"explode\""],
        ),
        (
            vec!["add", "--point", "memory-map", "--action", "drop"],
            vec!["rule 3", "\"action\"", "\"drop\"", "memory-map"],
        ),
        (
            vec![
                "add",
                "--point",
                "event:*",
                "--action",
                "drop",
                "--probability",
                "2",
            ],
            vec!["\"probability\"", "2", "out of range"],
        ),
        (
            vec!["add", "--point", "request:NOPE:after", "--action", "drop"],
            vec!["\"point\"", "\"request:NOPE:after\""],
        ),
        (vec!["clear", "9"], vec!["no rule with id 9", "rules: 1, 2"]),
    ] {
        let e = inject_err(&d, &args);
        for w in words {
            assert!(e.contains(w), "inject {args:?}: {e:?} lacks {w:?}");
        }
    }
    let mut c = d.client_with_events(64);
    assert_eq!(status_of(c.nop()), Status::Busy);
    c.nop().unwrap();
    assert_eq!(inject_ok(&d, &["clear", "1"]).trim(), "cleared 1 rule(s)");
    assert_eq!(rules(&d).len(), 1);
    let good = plan_file("seed = 9\n[[rule]]\npoint = \"request:NOP:before\"\naction = \"fail\"\nstatus = \"EPERM\"\n");
    let out = inject_ok(&d, &["load", good.path().to_str().unwrap()]);
    assert_eq!(out.trim(), "loaded 1 rule(s), seed 9");
    assert_eq!(status_of(c.nop()), Status::Perm);
    let bad = plan_file("[[rule]]\npoint = \"event:*\"\naction = \"drop\"\nsped = 3\n");
    let e = inject_err(&d, &["load", bad.path().to_str().unwrap()]);
    assert!(
        e.contains("rule 1") && e.contains("\"sped\"") && e.contains('3'),
        "{e}"
    );
    assert_eq!(rules(&d)[0]["action"], "fail", "a bad load changes nothing");
    let e = inject_err(&d, &["now", "--action", "drop"]);
    assert!(e.contains("drop"), "{e}");
    // The fail rules' FAULT_INJECTED events came first, in order.
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(
        fi.args,
        [point_request(Opcode::Nop, false), 1, 1, Status::Busy as u64]
    );
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(
        fi.args,
        [point_request(Opcode::Nop, false), 1, 1, Status::Perm as u64]
    );
    inject_ok(&d, &["now", "--action", "revoke-mr"]);
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(fi.args, [6 << 16, 6, 0, 0], "no live MR: nothing revoked");
    assert_eq!(inject_ok(&d, &["clear"]).trim(), "cleared 1 rule(s)");
    c.nop().unwrap();
}

#[test]
fn bad_faults_file_stops_the_daemon_with_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let plan = plan_file(
        "[[rule]]\npoint = \"request:REG_MR:before\"\naction = \"fail\"\nstatus = \"ENOPE\"\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pinlease"))
        .args(["serve", "--socket-path"])
        .arg(dir.path().join("vu.sock"))
        .arg("--faults")
        .arg(plan.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("rule 1: key \"status\" = \"ENOPE\"")
            && e.contains(plan.path().to_str().unwrap()),
        "{e}"
    );
    assert!(!dir.path().join("vu.sock").exists(), "it must not listen");
}

#[test]
fn status_shows_the_plan_and_counts_and_seed_override() {
    let (mut d, _f) = daemon_with_plan(
        "seed = 3\n[[rule]]\npoint = \"request:NOP:before\"\naction = \"delay\"\nms = 1\nprobability = 0.5\nskip = 1\n",
        &["--fault-seed", "11"],
    );
    let mut c = d.client_with_events(64);
    for _ in 0..20 {
        c.nop().unwrap();
    }
    let j = d.status_json();
    let f = &j["faults"];
    assert_eq!(f["seed"].as_u64(), Some(11));
    let r = &f["rules"][0];
    assert_eq!((r["id"].as_u64(), r["hits"].as_u64()), (Some(1), Some(20)));
    let fires = r["fires"].as_u64().unwrap();
    assert!(
        (1..19).contains(&fires),
        "fires {fires} of 19 draws at p 0.5"
    );
    assert_eq!(f["injected"][0]["count"].as_u64(), Some(fires));
    let text = String::from_utf8(d.status_cli(false).stdout).unwrap();
    assert!(text.contains("FAULTS (seed 11, 1 rule(s))"), "{text}");
    assert!(text.contains("request:NOP:before"), "{text}");
    assert!(
        text.contains(&format!("request            delay            {fires}")),
        "{text}"
    );
    d.assert_healthy();
}

#[test]
fn fail_at_context_teardown_and_lease_break_leaves_the_model_alone() {
    let (mut d, _f, mut c) = start_with_plan(
        r#"
[[rule]]
point = "context-teardown"
action = "fail"
status = "EBUSY"
count = 1
[[rule]]
point = "lease-break"
action = "fail"
status = "ENOMEM"
"#,
    );
    let ctx = c.create_context(1, "teardown").unwrap();
    let lease = c
        .lease_take(ctx, &lease_req(file(1), 0, 4096, PL_POLICY_REVOKE))
        .unwrap();
    let r = c.lease_break(&break_req(file(1), 0, 4096, PL_BREAK_TRUNCATE));
    assert_eq!(status_of(r), Status::NoMem);
    let st = d.device();
    assert_eq!(
        find_by_handle(&st["leases"], "handle", lease).unwrap()["state"],
        "active"
    );
    // A break that overlaps no ACTIVE lease is not a lease-break hit.
    c.lease_break(&break_req(file(2), 0, 4096, PL_BREAK_TRUNCATE))
        .unwrap();
    assert_eq!(rules(&d)[1]["hits"].as_u64(), Some(1));
    assert_eq!(status_of(c.close_context(ctx)), Status::Busy);
    let st = d.device();
    assert_eq!(
        find_by_handle(&st["contexts"], "handle", ctx).unwrap()["state"],
        "open"
    );
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(fi.args, [5 << 16, 1, 2, Status::NoMem as u64]);
    let fi = event_of(&mut c, PL_EVENT_FAULT_INJECTED);
    assert_eq!(
        (fi.ctx, fi.args),
        (ctx, [4 << 16, 1, 1, Status::Busy as u64])
    );
    let closed = c.close_context(ctx).unwrap();
    assert_eq!(closed.leases_released, 1);
    d.assert_healthy();
}

#[test]
fn reordered_event_follows_the_next_one() {
    let (mut d, _f, mut c) = start_with_plan(
        "[[rule]]\npoint = \"event:CONTEXT_TORN_DOWN\"\naction = \"reorder\"\ncount = 1\n",
    );
    let a = c.create_context(1, "a").unwrap();
    let b = c.create_context(2, "b").unwrap();
    c.close_context(a).unwrap();
    c.close_context(b).unwrap();
    let fi = expect_event(&mut c, "FAULT_INJECTED");
    assert_eq!(
        (fi.kind, fi.ctx, fi.args),
        (
            PL_EVENT_FAULT_INJECTED,
            a,
            [2 << 16 | u64::from(PL_EVENT_CONTEXT_TORN_DOWN), 5, 1, 0]
        )
    );
    let first = expect_event(&mut c, "B's CONTEXT_TORN_DOWN");
    let second = expect_event(&mut c, "A's CONTEXT_TORN_DOWN");
    assert_eq!(
        (first.kind, first.ctx, second.kind, second.ctx),
        (PL_EVENT_CONTEXT_TORN_DOWN, b, PL_EVENT_CONTEXT_TORN_DOWN, a)
    );
    assert!(first.seq < second.seq);
    d.assert_healthy();
}
