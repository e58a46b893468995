//! A short session on a running `pinlease serve`, driven from the host by
//! the test frontend (it plays QEMU and a guest driver): two contexts, MRs,
//! device WRITE and atomics, and layout leases broken under the revoke and
//! timeout policies, with the device's events and `pinlease status` tables
//! printed along the way. `scripts/demo` runs it; every step checks its
//! result and the example exits non-zero on the first surprise.
//!
//!     cargo run --example host_session -- --socket-path S --admin-socket A

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pinlease_abi::*;
use pinlease_testkit::frontend::client::{Client, RegMrArgs};
use pinlease_testkit::frontend::FrontendConfig;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    socket_path: PathBuf,
    #[arg(long)]
    admin_socket: PathBuf,
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn check(ok: bool, what: &str) -> Res<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("unexpected: {what}").into())
    }
}

fn show_status(admin: &Path, title: &str) -> Res<()> {
    let reply = pinlease::admin::request(admin, &serde_json::json!({"cmd": "status"}))?;
    println!("\n--- pinlease status: {title} ---");
    print!("{}", pinlease::status_view::render(&reply));
    Ok(())
}

/// Prints the events the device sent and returns their kinds.
fn drain_events(c: &mut Client) -> Res<Vec<u16>> {
    let mut kinds = Vec::new();
    while let Some(e) = c.next_event(Duration::from_millis(300))? {
        let args: Vec<String> = e.args.iter().map(|a| format!("{a:#x}")).collect();
        println!(
            "    event #{} {:<17} ctx {:#x} args [{}]",
            e.seq,
            event_kind_name(e.kind).unwrap_or("?"),
            e.ctx,
            args.join(", ")
        );
        kinds.push(e.kind);
    }
    Ok(kinds)
}

fn file_id(ino: u64) -> PlFileId {
    // dev 8:1, as a guest's /dev/vda1 would report it.
    PlFileId::new(0x800001, ino, 1)
}

fn session(args: &Args) -> Res<()> {
    let mut c = Client::connect(
        &args.socket_path,
        FrontendConfig::default(),
        Duration::from_secs(10),
    )?;
    let q = c.query()?;
    println!(
        "connected: ABI {}, features {:#x}, up to {} contexts, {} MRs, {} pages per MR, {} leases",
        q.abi_version, q.features, q.max_contexts, q.max_mrs, q.max_pages_per_mr, q.max_leases
    );
    c.post_event_buffers(32)?;

    // Two contexts: a process doing RDMA-style I/O and its peer.
    let a = c.create_context(100, "rdma-app")?;
    let b = c.create_context(200, "peer")?;
    println!("contexts: rdma-app {a:#x}, peer {b:#x}");

    // A's send buffer and B's receive buffer: the device moves the bytes.
    let (send, send_pages) = c.alloc_mr(a, 4, PL_ACCESS_ALL)?;
    let (recv, recv_pages) = c.alloc_mr(b, 4, PL_ACCESS_ALL)?;
    let msg = b"written by the device into the peer's pinned pages";
    c.frontend().write_mem(send_pages[0], msg)?;
    c.write(
        a,
        &PlDmaReq {
            local_key: send,
            local_offset: 0,
            remote_key: recv,
            remote_offset: 0,
            length: msg.len() as u64,
        },
    )?;
    let got = c.frontend().read_mem(recv_pages[0], msg.len())?;
    check(got == msg, "WRITE did not land in the peer's MR")?;
    println!(
        "WRITE {send:#x} -> {recv:#x}: {:?}",
        String::from_utf8_lossy(&got)
    );

    let before = c.fetch_add(b, recv, 4096, 5)?;
    let swapped = c.compare_swap(b, recv, 4096, before + 5, 42)?;
    check(swapped == before + 5, "COMPARE_SWAP saw another value")?;
    let pattern = PlPatternReq {
        key: recv,
        offset: 8192,
        length: 8192,
        pattern: 0xc0ffee,
        mode: PL_PATTERN_OFFSET_XOR,
        reserved: 0,
    };
    c.fill(b, &pattern)?;
    let v = c.verify(b, &pattern)?;
    check(v.mismatches == 0, "VERIFY found mismatches after FILL")?;
    println!("FETCH_ADD, COMPARE_SWAP, FILL and VERIFY on {recv:#x}: ok");

    // Two file-backed MRs of A, each under a layout lease A holds.
    let f1 = file_id(1001);
    let f2 = file_id(1002);
    let p1 = c.alloc_pages(8)?;
    let p2 = c.alloc_pages(8)?;
    let lease1 = c.lease_take(
        a,
        &PlLeaseTakeReq {
            file: f1,
            start: 0,
            length: 0,
            policy: PL_POLICY_REVOKE,
            owner_pid: 100,
        },
    )?;
    let lease2 = c.lease_take(
        a,
        &PlLeaseTakeReq {
            file: f2,
            start: 0,
            length: 0,
            policy: PL_POLICY_TIMEOUT,
            owner_pid: 100,
        },
    )?;
    let mr1 = c.reg_mr(a, &RegMrArgs::pages(PL_ACCESS_ALL, &p1).on_file(f1, 0))?;
    let mr2 = c.reg_mr(a, &RegMrArgs::pages(PL_ACCESS_ALL, &p2).on_file(f2, 0))?;
    check(
        mr1.lease == lease1 && mr2.lease == lease2,
        "REG_MR did not report the covering leases",
    )?;
    println!("file MRs {:#x} (ino 1001, lease {lease1:#x}, revoke) and {:#x} (ino 1002, lease {lease2:#x}, timeout)", mr1.key, mr2.key);
    show_status(&args.admin_socket, "two contexts, four MRs, two leases")?;

    // The guest truncates file 1001: revoke policy.
    println!("\ntruncate of ino 1001 -> LEASE_BREAK (revoke policy):");
    let r = c.lease_break(&PlLeaseBreakReq {
        file: f1,
        start: 0,
        length: 0,
        reason: PL_BREAK_TRUNCATE,
        reserved: 0,
    })?;
    println!(
        "    leases {} held {} MRs revoked {} pages unpinned {}",
        r.leases, r.leases_held, r.mrs_revoked, r.pages_unpinned
    );
    check(
        r.mrs_revoked == 1 && r.leases_held == 0,
        "revoke policy did not revoke exactly one MR",
    )?;
    let kinds = drain_events(&mut c)?;
    check(
        kinds.contains(&PL_EVENT_MR_REVOKED) && kinds.contains(&PL_EVENT_LEASE_BROKEN),
        "no MR_REVOKED/LEASE_BROKEN event",
    )?;
    let late = c.write(
        a,
        &PlDmaReq {
            local_key: send,
            local_offset: 0,
            remote_key: mr1.key,
            remote_offset: 0,
            length: 64,
        },
    );
    check(
        late.as_ref().err().and_then(|e| e.status()) == Some(Status::Canceled),
        "WRITE into a revoked MR was not refused",
    )?;
    println!(
        "    WRITE into revoked {:#x}: ECANCELED, as it must",
        mr1.key
    );

    // The guest truncates file 1002: timeout policy; the kernel's
    // lease-break-time runs out while the pins remain.
    println!("\ntruncate of ino 1002 -> LEASE_BREAK (timeout policy), then the kernel times the lease out:");
    let r = c.lease_break(&PlLeaseBreakReq {
        file: f2,
        start: 0,
        length: 0,
        reason: PL_BREAK_TRUNCATE,
        reserved: 0,
    })?;
    check(
        r.leases_held == 1 && r.mrs_revoked == 0,
        "timeout policy did not hold the lease",
    )?;
    c.lease_release(a, lease2, PL_RELEASE_LOST)?;
    for _ in 0..3 {
        c.write(
            a,
            &PlDmaReq {
                local_key: send,
                local_offset: 0,
                remote_key: mr2.key,
                remote_offset: 0,
                length: 64,
            },
        )?;
    }
    drain_events(&mut c)?;
    println!(
        "    3 device WRITEs into pages the file no longer owns: counted against lease {lease2:#x}"
    );
    show_status(&args.admin_socket, "after the two truncates")?;

    println!("\nclose of rdma-app's device fd -> CLOSE_CONTEXT:");
    let t = c.close_context(a)?;
    println!(
        "    MRs destroyed {} leases released {} pages unpinned {}",
        t.mrs_destroyed, t.leases_released, t.pages_unpinned
    );
    drain_events(&mut c)?;
    c.release_context(a)?;
    c.close_context(b)?;
    c.release_context(b)?;
    drain_events(&mut c)?;
    c.into_frontend().disconnect()?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    match session(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("host_session: {e}");
            ExitCode::FAILURE
        }
    }
}
