//! Transport tests of the vhost-user test frontend against the echo daemon,
//! over a real unix socket.

use std::collections::HashMap;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pinlease_testkit::frontend::echo::echo_config_space;
use pinlease_testkit::frontend::{
    spawn_echo_daemon, Desc, EchoDaemon, FrontendConfig, FrontendError, TestFrontend,
};
use vhost::vhost_user::VhostUserProtocolFeatures;

const T: Duration = Duration::from_secs(5);

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    daemon: EchoDaemon,
    fe: TestFrontend,
}

fn setup_with(cfg: FrontendConfig) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.sock");
    let daemon = spawn_echo_daemon(&path).unwrap();
    let fe = TestFrontend::connect(&path, cfg, T).unwrap();
    Setup {
        _dir: dir,
        path,
        daemon,
        fe,
    }
}

fn setup() -> Setup {
    setup_with(FrontendConfig::default())
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(31)
                .wrapping_add(seed.wrapping_mul(7)) as u8
                ^ 0x5a
        })
        .collect()
}

#[test]
fn handshake_and_get_config() {
    let mut s = setup();
    let f = s.fe.acked_features();
    assert_ne!(f & (1 << 32), 0, "VIRTIO_F_VERSION_1 acked");
    assert_ne!(f & (1 << 30), 0, "VHOST_USER_F_PROTOCOL_FEATURES acked");
    let p = s.fe.acked_protocol_features();
    assert!(p.contains(
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::REPLY_ACK
    ));
    assert!(!p.contains(VhostUserProtocolFeatures::MQ), "not offered");

    let space = echo_config_space();
    assert_eq!(s.fe.get_config(0, 64).unwrap(), space.to_vec());
    assert_eq!(&s.fe.get_config(0, 13).unwrap()[..], b"pinlease-echo");
    assert_eq!(s.fe.get_config(20, 8).unwrap(), space[20..28].to_vec());
    // Past the end of the echo config space: the backend answers with an
    // empty (error) reply, which must surface as an error, not garbage or a
    // hang, and must leave the connection usable.
    assert!(matches!(
        s.fe.get_config(60, 8),
        Err(FrontendError::ConfigRejected { offset: 60, len: 8 })
    ));
    assert!(matches!(
        s.fe.get_config(4090, 8),
        Err(FrontendError::BadConfigRange { .. })
    ));
    assert_eq!(s.fe.get_config(16, 4).unwrap(), space[16..20].to_vec());
    assert_eq!(s.fe.request(b"after config", 32).unwrap(), b"after config");
}

#[test]
fn handshake_without_reply_ack() {
    let mut s = setup_with(FrontendConfig {
        reply_ack: false,
        ..Default::default()
    });
    assert!(!s
        .fe
        .acked_protocol_features()
        .contains(VhostUserProtocolFeatures::REPLY_ACK));
    assert_eq!(s.fe.request(b"no acks", 64).unwrap(), b"no acks");
}

#[test]
fn request_round_trip_sizes() {
    let mut s = setup();
    for (i, &len) in [1usize, 7, 64, 4095, 4096, 4097, 65536, 300_000]
        .iter()
        .enumerate()
    {
        let req = pattern(len, i as u32);
        let resp = s.fe.request(&req, len as u32).unwrap();
        assert_eq!(resp.len(), len);
        assert_eq!(resp, req, "len {len}");
        // Larger response buffer: the device reports only what it wrote.
        let resp = s.fe.request(&req, len as u32 + 100).unwrap();
        assert_eq!(resp, req, "len {len}, bigger buffer");
    }
    // Smaller response buffer: truncated echo.
    let req = pattern(1000, 99);
    assert_eq!(s.fe.request(&req, 10).unwrap(), req[..10].to_vec());
    // Writable-only chain: nothing to echo.
    assert_eq!(s.fe.request(&[], 32).unwrap(), Vec::<u8>::new());
    // Too large for the scratch area: a clear error, not a panic.
    match s.fe.request(&vec![0; 2 << 20], 16) {
        Err(FrontendError::ScratchTooSmall { req, .. }) => assert_eq!(req, 2 << 20),
        other => panic!("expected ScratchTooSmall, got {other:?}"),
    }
    assert_eq!(
        s.daemon
            .stats()
            .bad_chains
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn hundred_thousand_round_trips_do_not_leak_descriptors() {
    let mut s = setup();
    const N: u32 = 100_000;
    for i in 0..N {
        let mut req = [0u8; 24];
        req[..4].copy_from_slice(&i.to_le_bytes());
        req[4..8].copy_from_slice(&(!i).to_le_bytes());
        req[8..].copy_from_slice(&pattern(16, i));
        let resp = s.fe.request(&req, 64).unwrap();
        assert_eq!(resp, req, "round trip {i}");
    }
    assert_eq!(s.fe.free_descriptors(0).unwrap(), 256);
    assert_eq!(s.fe.in_flight(0).unwrap(), 0);
    assert_eq!(s.fe.avail_idx(0).unwrap(), (N % 65536) as u16);
    assert_eq!(s.daemon.requests(), u64::from(N));
    let bases = s.fe.disconnect().unwrap();
    // The device's next-avail index wrapped with ours.
    assert_eq!(bases, vec![N % 65536, 0]);
    s.daemon.wait().unwrap();
}

#[test]
fn many_chains_in_flight_before_waiting() {
    let mut s = setup();
    const CHAINS: usize = 100; // 200 descriptors of 256
    let mut bufs = HashMap::new();
    for i in 0..CHAINS {
        let len = 16 + i * 8;
        let req = pattern(len, i as u32 + 1000);
        let req_gpa = s.fe.alloc(len as u64, 8).unwrap();
        let resp_gpa = s.fe.alloc(len as u64, 4096).unwrap();
        assert_eq!(resp_gpa % 4096, 0);
        s.fe.write_mem(req_gpa, &req).unwrap();
        let head =
            s.fe.submit_chain(
                0,
                &[
                    Desc::readable(req_gpa, len as u32),
                    Desc::writable(resp_gpa, len as u32),
                ],
            )
            .unwrap();
        assert!(bufs.insert(head, (req, resp_gpa)).is_none(), "head reused");
    }
    assert_eq!(s.fe.free_descriptors(0).unwrap(), 256 - 2 * CHAINS);
    assert_eq!(s.fe.in_flight(0).unwrap(), CHAINS);
    s.fe.kick(0).unwrap();
    for _ in 0..CHAINS {
        let used = s.fe.wait_used(0, T).unwrap().expect("used element");
        let (req, resp_gpa) = bufs.remove(&used.id).expect("known head");
        assert_eq!(used.len as usize, req.len());
        assert_eq!(s.fe.read_mem(resp_gpa, req.len()).unwrap(), req);
    }
    assert!(bufs.is_empty());
    assert_eq!(s.fe.wait_used(0, Duration::from_millis(50)).unwrap(), None);
    assert_eq!(s.fe.free_descriptors(0).unwrap(), 256);

    // Filling the ring: 128 two-descriptor chains fit, the 129th does not.
    let gpa = s.fe.alloc(64, 8).unwrap();
    for _ in 0..128 {
        s.fe.submit_chain(0, &[Desc::readable(gpa, 8), Desc::writable(gpa + 32, 8)])
            .unwrap();
    }
    match s
        .fe
        .submit_chain(0, &[Desc::readable(gpa, 8), Desc::writable(gpa, 8)])
    {
        Err(FrontendError::QueueFull { needed, free, .. }) => assert_eq!((needed, free), (2, 0)),
        other => panic!("expected QueueFull, got {other:?}"),
    }
    s.fe.kick(0).unwrap();
    for _ in 0..128 {
        assert_eq!(s.fe.wait_used(0, T).unwrap().unwrap().len, 8);
    }
    assert_eq!(s.fe.free_descriptors(0).unwrap(), 256);
}

#[test]
fn call_signalled_before_waiting_is_not_lost() {
    let mut s = setup();
    let gpa = s.fe.alloc(4096, 4096).unwrap();
    s.fe.write_mem(gpa, b"early bird").unwrap();
    let head =
        s.fe.submit_chain(
            0,
            &[Desc::readable(gpa, 10), Desc::writable(gpa + 2048, 64)],
        )
        .unwrap();
    s.fe.kick(0).unwrap();
    // Let the device complete and signal long before we start waiting.
    std::thread::sleep(Duration::from_millis(100));
    let t0 = Instant::now();
    let used = s.fe.wait_used(0, T).unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(used.id, head);
    assert_eq!(used.len, 10);
    assert_eq!(s.fe.read_mem(gpa + 2048, 10).unwrap(), b"early bird");
    // The stale call count must not produce a phantom element.
    assert_eq!(s.fe.wait_used(0, Duration::from_millis(50)).unwrap(), None);
}

#[test]
fn indirect_chain_round_trip() {
    let mut s = setup();
    let req = pattern(300, 5);
    let a = s.fe.alloc(300, 8).unwrap();
    let b = s.fe.alloc(300, 8).unwrap();
    s.fe.write_mem(a, &req).unwrap();
    let head =
        s.fe.submit_indirect_chain(
            0,
            &[
                Desc::readable(a, 100),
                Desc::readable(a + 100, 200),
                Desc::writable(b, 150),
                Desc::writable(b + 150, 150),
            ],
        )
        .unwrap();
    s.fe.kick(0).unwrap();
    let used = s.fe.wait_used(0, T).unwrap().unwrap();
    assert_eq!((used.id, used.len), (head, 300));
    assert_eq!(s.fe.read_mem(b, 300).unwrap(), req);
}

#[test]
fn bad_descriptors_are_completed_and_device_survives() {
    let mut s = setup();
    let mem_size = s.fe.config().mem_size;
    let ok = s.fe.alloc(64, 8).unwrap();
    // Readable buffer outside guest memory.
    let h =
        s.fe.submit_chain(
            0,
            &[
                Desc::readable(mem_size + 0x1000, 16),
                Desc::writable(ok, 16),
            ],
        )
        .unwrap();
    s.fe.kick(0).unwrap();
    let used = s.fe.wait_used(0, T).unwrap().unwrap();
    assert_eq!((used.id, used.len), (h, 0));
    // Zero-length readable, writable crossing the end of memory.
    let h =
        s.fe.submit_chain(
            0,
            &[Desc::readable(ok, 0), Desc::writable(mem_size - 4, 64)],
        )
        .unwrap();
    s.fe.kick(0).unwrap();
    let used = s.fe.wait_used(0, T).unwrap().unwrap();
    assert_eq!((used.id, used.len), (h, 0), "nothing to echo");
    assert_eq!(
        s.daemon
            .stats()
            .bad_chains
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_eq!(s.fe.request(b"still alive", 32).unwrap(), b"still alive");
    assert_eq!(s.fe.free_descriptors(0).unwrap(), 256);
}

#[test]
fn add_and_remove_memory_region() {
    let mut s = setup();
    const GPA: u64 = 1 << 30;
    const SIZE: u64 = 2 << 20;
    s.fe.add_mem_region(GPA, SIZE).unwrap();
    // Overlapping region: refused locally with a clear error.
    assert!(s.fe.add_mem_region(GPA + 4096, 4096).is_err());

    let req = pattern(5000, 77);
    s.fe.write_mem(GPA + 0x1000, &req).unwrap();
    let h =
        s.fe.submit_chain(
            0,
            &[
                Desc::readable(GPA + 0x1000, 5000),
                // Response straddles nothing but lives in the new region too.
                Desc::writable(GPA + SIZE - 8192, 5000),
            ],
        )
        .unwrap();
    s.fe.kick(0).unwrap();
    let used = s.fe.wait_used(0, T).unwrap().unwrap();
    assert_eq!((used.id, used.len), (h, 5000));
    assert_eq!(s.fe.read_mem(GPA + SIZE - 8192, 5000).unwrap(), req);

    // Re-sending the whole table keeps everything working.
    s.fe.set_mem_table_again().unwrap();
    assert_eq!(
        s.fe.request(b"after SET_MEM_TABLE", 64).unwrap(),
        b"after SET_MEM_TABLE"
    );

    s.fe.remove_mem_region(GPA).unwrap();
    assert!(matches!(
        s.fe.remove_mem_region(GPA),
        Err(FrontendError::NoSuchRegion { gpa: GPA })
    ));
    assert!(s.fe.write_mem(GPA, b"gone").is_err());
    // The device must no longer reach the removed region.
    let ok = s.fe.alloc(64, 8).unwrap();
    let h =
        s.fe.submit_chain(
            0,
            &[Desc::readable(GPA + 0x1000, 16), Desc::writable(ok, 16)],
        )
        .unwrap();
    s.fe.kick(0).unwrap();
    let used = s.fe.wait_used(0, T).unwrap().unwrap();
    assert_eq!((used.id, used.len), (h, 0));
    assert_eq!(
        s.fe.request(b"after REM_MEM_REG", 64).unwrap(),
        b"after REM_MEM_REG"
    );
}

#[test]
fn set_mem_table_subset_hides_region_from_device() {
    let mut s = setup();
    const GPA: u64 = 1 << 32;
    s.fe.add_mem_region(GPA, 1 << 20).unwrap();
    s.fe.set_mem_table_subset(&[0]).unwrap();
    let ok = s.fe.alloc(64, 8).unwrap();
    s.fe.write_mem(GPA, b"invisible").unwrap();
    let h =
        s.fe.submit_chain(0, &[Desc::readable(GPA, 9), Desc::writable(ok, 16)])
            .unwrap();
    s.fe.kick(0).unwrap();
    let used = s.fe.wait_used(0, T).unwrap().unwrap();
    assert_eq!((used.id, used.len), (h, 0));
    assert!(matches!(
        s.fe.set_mem_table_subset(&[0x1234_0000]),
        Err(FrontendError::NoSuchRegion { gpa: 0x1234_0000 })
    ));
}

#[test]
fn disconnect_then_reconnect_to_fresh_daemon() {
    let mut s = setup();
    assert_eq!(s.fe.request(b"first", 16).unwrap(), b"first");
    let bases = s.fe.disconnect().unwrap();
    assert_eq!(bases, vec![1, 0]);
    // The daemon serves one connection and exits once we hang up.
    s.daemon.wait().unwrap();

    let daemon2 = spawn_echo_daemon(&s.path).unwrap();
    let mut fe2 = TestFrontend::connect(&s.path, FrontendConfig::default(), T).unwrap();
    assert_eq!(fe2.request(b"second", 16).unwrap(), b"second");
    assert_eq!(daemon2.requests(), 1);
    drop(fe2);
    daemon2.wait().unwrap();
}

#[test]
fn event_queue_without_events_times_out() {
    let mut s = setup();
    s.fe.post_event_buffers(8, 128).unwrap();
    let t0 = Instant::now();
    assert_eq!(s.fe.next_event(Duration::from_millis(200)).unwrap(), None);
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(s.fe.in_flight(1).unwrap(), 8);
    assert_eq!(s.fe.wait_used(1, Duration::ZERO).unwrap(), None);
}

#[test]
fn request_to_stopped_daemon_times_out() {
    let mut s = setup_with(FrontendConfig {
        request_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    assert_eq!(s.fe.request(b"ping", 8).unwrap(), b"ping");
    let Setup {
        daemon,
        mut fe,
        _dir,
        ..
    } = s;
    daemon.stop().unwrap();
    let t0 = Instant::now();
    match fe.request(b"ping", 8) {
        Err(FrontendError::Timeout { queue: 0, .. }) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
    // The timed-out chain still owns the scratch area.
    assert!(matches!(
        fe.request(b"ping", 8),
        Err(FrontendError::ScratchBusy { .. })
    ));
    // Control messages fail instead of hanging.
    assert!(fe.get_config(0, 4).is_err());
}

#[test]
fn silent_backend_makes_connect_fail_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let keeper = std::thread::spawn(move || {
        // Accept and hold the connection without ever answering.
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(2));
        drop(conn);
    });
    let t0 = Instant::now();
    let r = TestFrontend::connect(
        &path,
        FrontendConfig {
            msg_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        T,
    );
    assert!(
        matches!(
            r,
            Err(FrontendError::MessageTimeout {
                request: "GET_FEATURES",
                ..
            })
        ),
        "{:?}",
        r.err()
    );
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    keeper.join().unwrap();
}

#[test]
fn connect_waits_for_socket_to_appear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("late.sock");
    let p2 = path.clone();
    let spawner = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        spawn_echo_daemon(&p2).unwrap()
    });
    let mut fe = TestFrontend::connect(&path, FrontendConfig::default(), T).unwrap();
    let daemon = spawner.join().unwrap();
    assert_eq!(fe.request(b"late", 8).unwrap(), b"late");
    drop(fe);
    daemon.wait().unwrap();

    let missing = dir.path().join("never.sock");
    let t0 = Instant::now();
    let r = TestFrontend::connect(
        &missing,
        FrontendConfig::default(),
        Duration::from_millis(100),
    );
    assert!(matches!(r, Err(FrontendError::Connect { .. })));
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[test]
fn stopping_unconnected_daemon_returns() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idle.sock");
    let daemon = spawn_echo_daemon(&path).unwrap();
    assert!(path.exists());
    daemon.stop().unwrap();
    assert!(!path.exists(), "listener removed its socket");
}

#[test]
fn bad_config_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unused.sock");
    let bad: [fn(&mut FrontendConfig); 4] = [
        |c| c.queue_size = 100,
        |c| c.mem_size = 4097,
        |c| c.mem_size = 8192,
        |c| c.num_queues = 0,
    ];
    for set in bad {
        let mut cfg = FrontendConfig::default();
        set(&mut cfg);
        match TestFrontend::connect(&path, cfg, Duration::ZERO) {
            Err(FrontendError::BadConfig { .. }) => {}
            other => panic!("expected BadConfig, got {:?}", other.err()),
        }
    }
}

#[test]
fn alloc_alignment_and_exhaustion() {
    let mut s = setup();
    let start = s.fe.layout().data_start;
    let a = s.fe.alloc(1, 1).unwrap();
    assert_eq!(a, start);
    let b = s.fe.alloc(10, 4096).unwrap();
    assert_eq!(b % 4096, 0);
    assert!(b > a);
    assert!(matches!(
        s.fe.alloc(1, 3),
        Err(FrontendError::BadAlignment { align: 3 })
    ));
    assert!(matches!(
        s.fe.alloc(u64::MAX / 2, 8),
        Err(FrontendError::OutOfGuestMemory { .. })
    ));
    s.fe.reset_alloc();
    assert_eq!(s.fe.alloc(8, 8).unwrap(), start);
}

/// Quick throughput figure: `cargo test --release --test frontend_transport
/// -- --ignored --nocapture echo_round_trip_rate`.
#[test]
#[ignore]
fn echo_round_trip_rate() {
    let mut s = setup();
    let req = [7u8; 64];
    for _ in 0..10_000 {
        s.fe.request(&req, 64).unwrap();
    }
    let n = 300_000u32;
    let t0 = Instant::now();
    for _ in 0..n {
        let r = s.fe.request(&req, 64).unwrap();
        assert_eq!(r.len(), 64);
    }
    let dt = t0.elapsed();
    println!(
        "echo: {n} round trips of 64 bytes in {dt:?}: {:.0} round trips/s",
        f64::from(n) / dt.as_secs_f64()
    );
}

#[test]
fn request_keeps_other_completions_for_wait_used() {
    let mut s = setup();
    let a = s.fe.alloc(64, 8).unwrap();
    let b = s.fe.alloc(64, 8).unwrap();
    s.fe.write_mem(a, b"raw chain").unwrap();
    // Published but not kicked: the device picks it up with the request's kick,
    // ahead of the request, so request() sees its completion first.
    let raw =
        s.fe.submit_chain(0, &[Desc::readable(a, 9), Desc::writable(b, 64)])
            .unwrap();
    assert_eq!(s.fe.request(b"via request", 64).unwrap(), b"via request");
    let used = s.fe.wait_used(0, T).unwrap().unwrap();
    assert_eq!((used.id, used.len), (raw, 9));
    assert_eq!(s.fe.read_mem(b, 9).unwrap(), b"raw chain");
    assert_eq!(s.fe.in_flight(0).unwrap(), 0);
}

#[test]
fn frontend_and_daemon_are_send() {
    fn is_send<T: Send>() {}
    is_send::<TestFrontend>();
    is_send::<EchoDaemon>();
}
