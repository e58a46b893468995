//! The status reply read back and rendered: a real device's status goes
//! through JSON into `StatusReply` unchanged, and the tables show it.

use std::sync::Arc;

use serde_json::{json, Value};

use std::sync::atomic::Ordering;

use super::*;
use crate::abi::*;
use crate::faults::{parse_plan, Action, FaultEngine};
use crate::guest_ram::test_ram;
use crate::model::mr::FileRange;
use crate::model::{Device, Limits, RegMr};
use crate::state::ServerState;

const PAGE: u64 = PL_PAGE_SIZE;

fn file_id(ino: u64) -> PlFileId {
    PlFileId::new(0x803, ino, 7)
}

fn lease_req(file: PlFileId, length: u64, policy: u32) -> PlLeaseTakeReq {
    PlLeaseTakeReq {
        file,
        start: 0,
        length,
        policy,
        owner_pid: 99,
    }
}

/// A device with one of everything the status shows: an event channel,
/// an export and its import, a file MR under a lease, a scrubbed MR, two
/// leases (to EOF and bounded), and an MR the fault engine revoked.
fn busy_device(faults: &FaultEngine) -> Arc<Device> {
    let dev = Arc::new(Device::new(Limits::default()));
    dev.set_memory(Box::new(test_ram(&[(0, 4 << 20)])));
    let c = dev.create_context(42, "fio").unwrap();
    dev.create_child(c, PL_CHILD_EVENT_CHANNEL).unwrap();
    dev.lease_take(c, &lease_req(file_id(12), 0, PL_POLICY_REVOKE))
        .unwrap();
    dev.lease_take(c, &lease_req(file_id(13), 2 * PAGE, PL_POLICY_WAIT))
        .unwrap();
    let mr = |flags, file, pages: Vec<u64>| RegMr {
        access: PL_ACCESS_READ | PL_ACCESS_WRITE,
        flags,
        first_page_offset: 0,
        length: pages.len() as u64 * PAGE,
        file,
        pages,
    };
    let file_mr = mr(
        PL_REG_HAS_FILE | PL_REG_LONGTERM,
        Some(FileRange {
            file: file_id(12),
            offset: PAGE,
        }),
        vec![0, PAGE],
    );
    dev.reg_mr(c, file_mr).unwrap();
    let scrubbed = dev
        .reg_mr(c, mr(PL_REG_SCRUB, None, vec![4 * PAGE]))
        .unwrap()
        .key;
    let export = dev.export_mr(c, scrubbed).unwrap().export;
    dev.import_mr(
        c,
        &PlImportMrReq {
            export,
            access: PL_ACCESS_READ,
            reserved: 0,
        },
    )
    .unwrap();
    dev.reg_mr(c, mr(0, None, vec![8 * PAGE])).unwrap();
    faults.now(&dev, Action::RevokeMr);
    dev
}

fn engine() -> Arc<FaultEngine> {
    let plan = parse_plan(
        "seed = 5\n[[rule]]\npoint = \"request:REG_MR:before\"\naction = \"fail\"\nstatus = \"ENOMEM\"\nprobability = 0.5\ncount = 2\n",
    )
    .unwrap();
    FaultEngine::new(&plan, None)
}

/// The reply `crate::admin::status_reply` sends for a daemon whose slots
/// hold `devs` (each slot served 2 connections; connected when it has a
/// device), through its text.
fn reply_of_slots(devs: Vec<Option<Arc<Device>>>, faults: &Arc<FaultEngine>) -> Value {
    let names = (0..devs.len())
        .map(|i| format!("/run/vu.sock{i}"))
        .collect();
    let state = ServerState::with_faults(faults.clone(), names).unwrap();
    for (slot, dev) in state.frontends.iter().zip(devs) {
        slot.connected.store(dev.is_some(), Ordering::SeqCst);
        slot.connections.store(2, Ordering::SeqCst);
        *slot.device.lock().unwrap() = dev;
    }
    serde_json::from_str(&crate::admin::status_reply(&state).to_string()).unwrap()
}

/// The reply of a one-socket daemon.
fn reply_of(dev: Option<&Arc<Device>>, faults: &Arc<FaultEngine>) -> Value {
    reply_of_slots(vec![dev.cloned()], faults)
}

#[test]
fn a_devices_status_round_trips_and_renders() {
    let faults = engine();
    let dev = busy_device(&faults);
    let reply = reply_of(Some(&dev), &faults);
    let read = StatusReply::from_json(&reply).unwrap();
    // Nothing the daemon wrote is lost or renamed on the way back.
    let f = &read.frontends[0];
    let st = f.status.as_ref().unwrap();
    assert_eq!(
        serde_json::to_value(st).unwrap(),
        reply["frontends"][0]["status"]
    );
    // A one-socket daemon's top level keeps the old fields, the same values.
    for k in ["connected", "connections", "status"] {
        assert_eq!(reply[k], reply["frontends"][0][k], "{k}");
    }
    assert_eq!(serde_json::to_value(&read.faults).unwrap(), reply["faults"]);
    assert_eq!((f.connected, f.connections, f.index), (true, 2, 0));
    assert_eq!(f.socket, "/run/vu.sock0");
    assert_eq!(st.contexts.len(), 1);
    assert_eq!((st.mrs.len(), st.leases.len()), (4, 2));

    let text = render(&reply);
    assert_eq!(text, render_reply(&read));
    let revoked = st.mrs.iter().find(|m| m.state == "revoked").unwrap();
    let export = st.contexts[0].children.iter().find(|c| c.mr.is_some());
    let export = export.unwrap();
    for want in [
        "frontend: connected (connections served: 2)",
        "guest memory: 0x0+4MiB",
        "contexts (1)",
        " fio ",
        " open ",
        "event-channel",
        &format!(
            "{} mr-export of {} refs 1",
            export.handle,
            export.mr.as_ref().unwrap()
        ),
        "memory regions (4)",
        " rw- ",
        &format!("{} (injected)", revoked.state),
        ", import of ",
        "0:2051 ino 12 gen 7",
        " 4096 ",
        " 0/0/0",
        "layout leases (2)",
        "0..EOF",
        "0..8192",
        " revoke ",
        " wait ",
        " active ",
        "s ago",
        "scrubber off",
        "events queued ",
        "bad input rejected: 0",
        "requests by opcode and status:",
        "FAULTS (seed 5, 1 rule(s))",
        "request:REG_MR:before",
        " ENOMEM ",
        " 0.5 ",
        "runtime            revoke-mr        1",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert!(!text.contains("cannot be read"), "{text}");
}

#[test]
fn before_the_first_frontend_there_is_no_device() {
    let faults = FaultEngine::new(&Default::default(), None);
    let text = render(&reply_of(None, &faults));
    assert_eq!(
        text,
        "frontend: not connected (connections served: 2)\n\
         no device state yet (no frontend has connected)\n\
         \n\
         FAULTS (seed 0, 0 rule(s))\n  injected: none\n"
    );
}

#[test]
fn a_reply_missing_a_field_says_which() {
    let faults = engine();
    let dev = busy_device(&faults);
    let mut reply = reply_of(Some(&dev), &faults);
    reply["frontends"][0]["status"]["counters"]
        .as_object_mut()
        .unwrap()
        .remove("revokes");
    let e = StatusReply::from_json(&reply).unwrap_err().to_string();
    assert!(e.contains("missing field `revokes`"), "{e}");
    assert!(render(&reply).starts_with("status reply cannot be read: missing field `revokes`"));

    let mut reply = reply_of(Some(&dev), &faults);
    reply["faults"]["rules"][0]["hits"] = json!("many");
    let e = read_faults(&reply["faults"]).unwrap_err().to_string();
    assert!(e.contains("\"many\""), "{e}");
}

#[test]
fn several_frontends_are_shown_apart() {
    let faults = engine();
    let dev = busy_device(&faults);
    let reply = reply_of_slots(vec![None, Some(dev)], &faults);
    // No top-level copies: they would have to pick one frontend.
    for k in ["connected", "connections", "status"] {
        assert!(reply.get(k).is_none(), "{k} in {reply}");
    }
    let read = StatusReply::from_json(&reply).unwrap();
    let idx: Vec<(usize, bool)> = read
        .frontends
        .iter()
        .map(|f| (f.index, f.connected))
        .collect();
    assert_eq!(idx, vec![(0, false), (1, true)]);
    let text = render(&reply);
    let first = text
        .find("=== FRONTEND 0 (/run/vu.sock0) ===")
        .expect(&text);
    let second = text
        .find("=== FRONTEND 1 (/run/vu.sock1) ===")
        .expect(&text);
    let (zero, one) = text[first..].split_at(second - first);
    assert!(
        zero.contains("frontend: not connected (connections served: 2)\nno device state yet"),
        "{zero}"
    );
    assert!(
        one.contains("frontend: connected (connections served: 2)"),
        "{one}"
    );
    assert!(one.contains("memory regions (4)"), "{one}");
    assert_eq!(text.matches("FAULTS (seed 5").count(), 1, "{text}");
}
