//! The websocket: sessions driven like a page drives them, every refusal
//! with its code, the guards, resume and grace, the box limit and shutdown.

use damda_e2e::*;
use damda_protocol::{ErrorCode, ImportStage, ServerMessage, Snapshot, StepId, StepInfo};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Error as WsError;

/// The namespace types the box has of its own, per the snapshot alone (the
/// box may have moved on since), after checking the server's are ours.
fn separated_then(snapshot: &Snapshot) -> Vec<&'static str> {
    assert_eq!(
        snapshot_host_ns(snapshot),
        own_ns(),
        "the server is in our namespaces"
    );
    differing(&snapshot_box_ns(snapshot), &snapshot_host_ns(snapshot))
}

/// The namespace types the box has of its own, per the snapshot, after
/// checking the snapshot against the live box and the server against us.
fn separated(snapshot: &Snapshot) -> Vec<&'static str> {
    assert_eq!(
        ns_of(snapshot.pid),
        snapshot_box_ns(snapshot),
        "{}: snapshot vs readlink /proc/{}/ns/*",
        snapshot.step,
        snapshot.pid
    );
    assert_eq!(
        snapshot_host_ns(snapshot),
        own_ns(),
        "the server is in our namespaces"
    );
    differing(&snapshot_box_ns(snapshot), &snapshot_host_ns(snapshot))
}

/// Checks the snapshot's root against the live box and returns it.
fn root_checked(snapshot: &Snapshot) -> String {
    let root = snapshot.box_process.root.clone();
    assert_eq!(
        root_of(snapshot.pid),
        root,
        "{}: readlink /proc/{}/root",
        snapshot.step,
        snapshot.pid
    );
    if snapshot.step == StepId::Host {
        assert_eq!(root, "/");
    } else {
        assert_box_root(&root);
    }
    root
}

fn next() -> serde_json::Value {
    json!({ "type": "next" })
}

fn goto(step: &str) -> serde_json::Value {
    json!({ "type": "goto", "step": step })
}

/// The available steps, from the server itself.
async fn steps_of(server: &Server) -> Vec<StepInfo> {
    let response = http_get(server.addr, "/api/steps", &[]).await;
    assert_eq!(response.status, 200);
    serde_json::from_value(response.json()).expect("step infos")
}

/// Stops the server cleanly and checks that every helper it ran is gone.
fn stop_and_check(server: Server, seen: &[u32]) {
    let status = server.stop();
    assert!(status.success(), "serve exited {status}");
    assert_all_gone(seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_goes_forward_back_and_around() {
    let server = Server::start(&[]);
    let (mut ws, _id, host) = Ws::open(&server).await;
    let mut seen = vec![host.pid];
    let mut roots = Vec::new();
    assert!(!host.rebuilt);
    assert_eq!(separated(&host), Vec::<&str>::new());
    assert_eq!(host.box_process.root, "/");
    assert_eq!(
        ppid_of(host.pid),
        Some(server.pid()),
        "the box is the server's child"
    );
    assert_eq!(exe_of(host.pid).as_deref(), Some(HELPER_EXE));

    // next: chroot, on the same live box.
    ws.send_json(next()).await;
    let chroot = ws.expect_snapshot(StepId::Chroot).await;
    assert_eq!(chroot.pid, host.pid, "forward keeps the box");
    assert!(!chroot.rebuilt);
    assert_eq!(separated(&chroot), Vec::<&str>::new());
    roots.push(root_checked(&chroot));

    // next: uts. Only now does a namespace differ.
    ws.send_json(next()).await;
    let uts = ws.expect_snapshot(StepId::Uts).await;
    assert_eq!(uts.pid, host.pid);
    assert!(!uts.rebuilt);
    assert_eq!(separated(&uts), vec!["uts"]);
    assert_eq!(uts.box_process.hostname, BOX_HOSTNAME);
    assert_eq!(hostname_in(uts.pid), BOX_HOSTNAME);
    assert_eq!(root_checked(&uts), roots[0], "the same box, the same root");

    // back: announced as busy, then a rebuilt box at chroot.
    ws.send_json(json!({ "type": "back" })).await;
    ws.expect_busy().await;
    let back = ws.expect_snapshot(StepId::Chroot).await;
    seen.push(back.pid);
    assert!(back.rebuilt, "back replays");
    assert_ne!(back.pid, uts.pid, "back builds a new box");
    wait_gone(uts.pid, GONE_TIMEOUT).expect("the old box is destroyed");
    assert_eq!(separated(&back), Vec::<&str>::new());
    roots.push(root_checked(&back));
    assert_eq!(hostname_in(back.pid), own_hostname());

    // reset: busy, then a fresh box at host.
    ws.send_json(json!({ "type": "reset" })).await;
    ws.expect_busy().await;
    let reset = ws.expect_snapshot(StepId::Host).await;
    seen.push(reset.pid);
    assert!(reset.rebuilt);
    assert_ne!(reset.pid, back.pid);
    wait_gone(back.pid, GONE_TIMEOUT).expect("the old box is destroyed");
    assert_eq!(separated(&reset), Vec::<&str>::new());
    root_checked(&reset);

    // goto uts: forward, on the live box.
    ws.send_json(goto("uts")).await;
    let uts2 = ws.expect_snapshot(StepId::Uts).await;
    assert_eq!(uts2.pid, reset.pid, "goto forward applies to the live box");
    assert!(!uts2.rebuilt);
    assert_eq!(separated(&uts2), vec!["uts"]);
    roots.push(root_checked(&uts2));

    // goto host: backward, so a replay on a new box.
    ws.send_json(goto("host")).await;
    // A replay may be announced like back and reset announce theirs.
    let home = snapshot_at(&mut ws, StepId::Host).await;
    assert_eq!(home.step, StepId::Host);
    seen.push(home.pid);
    assert!(home.rebuilt);
    assert_ne!(home.pid, uts2.pid);
    wait_gone(uts2.pid, GONE_TIMEOUT).expect("the old box is destroyed");
    assert_eq!(separated(&home), Vec::<&str>::new());
    root_checked(&home);
    assert_eq!(server.helpers(), vec![home.pid], "one box per connection");
    // Each rebuilt box had a root of its own, removed with it.
    let mut distinct = roots.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "{roots:?}");
    assert_roots_removed(&roots);

    ws.close().await;
    stop_and_check(server, &seen);
}

/// Sends `next` and then `back`: the connection still drives its box.
/// Records the new box in `seen` and returns its pid.
async fn still_usable(ws: &mut Ws, box_pid: u32, seen: &mut Vec<u32>) -> u32 {
    ws.send_json(next()).await;
    let chroot = ws.expect_snapshot(StepId::Chroot).await;
    assert_eq!(chroot.pid, box_pid, "the refusal left the box as it was");
    ws.send_json(json!({ "type": "back" })).await;
    ws.expect_busy().await;
    let host = ws.expect_snapshot(StepId::Host).await;
    seen.push(host.pid);
    wait_gone(box_pid, GONE_TIMEOUT).expect("back destroys the old box");
    host.pid
}

/// The snapshot at `step`, past the busy notice and the replayed steps'
/// snapshots on the way.
async fn snapshot_at(ws: &mut Ws, step: StepId) -> Snapshot {
    loop {
        match ws.recv().await {
            ServerMessage::Snapshot(s) if s.step == step => return *s,
            ServerMessage::Snapshot(_) | ServerMessage::Busy { .. } => continue,
            other => panic!("expected the {step} snapshot, got {other:?}"),
        }
    }
}

/// The next message must be an error with `code`; returns its message.
async fn refused(ws: &mut Ws, code: ErrorCode) -> (String, Option<StepId>) {
    match ws.expect_error(code).await {
        ServerMessage::Error { message, step, .. } => (message, step),
        _ => unreachable!("expect_error returns errors"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_code_and_the_connection_stays() {
    let server = Server::start(&[]);
    // Every step is available in this build; were one not, a goto to it
    // would be refused by the engine (checked below when there is one).
    let unavailable = steps_of(&server)
        .await
        .into_iter()
        .find(|s| !s.available)
        .map(|s| s.id);
    let (mut ws, _id, host) = Ws::open(&server).await;
    let mut pid = host.pid;
    let mut seen = vec![pid];

    // Refused while parsing: the error alone, the box untouched.
    let malformed: Vec<(&str, String, ErrorCode)> = vec![
        ("not JSON", "{not json".into(), ErrorCode::BadMessage),
        (
            "unknown type",
            json!({ "type": "fly" }).to_string(),
            ErrorCode::BadMessage,
        ),
        (
            "no type",
            json!({ "step": "uts" }).to_string(),
            ErrorCode::BadMessage,
        ),
        (
            "goto without step",
            json!({ "type": "goto" }).to_string(),
            ErrorCode::BadMessage,
        ),
        (
            "unknown step",
            goto("vm").to_string(),
            ErrorCode::UnknownStep,
        ),
        (
            "20 KiB",
            json!({ "type": "next", "pad": "x".repeat(20 * 1024) }).to_string(),
            ErrorCode::TooLarge,
        ),
    ];
    for (what, text, code) in malformed {
        ws.send_text(text).await;
        let (message, _) = refused(&mut ws, code).await;
        if code == ErrorCode::UnknownStep {
            assert!(
                message.contains("vm") && message.contains("host, chroot, uts"),
                "{message}"
            );
        }
        if code == ErrorCode::TooLarge {
            assert!(message.contains("16384"), "{what}: {message}");
        }
        pid = still_usable(&mut ws, pid, &mut seen).await;
    }

    // A binary frame is not part of the protocol.
    ws.send_binary(br#"{"type":"next"}"#.to_vec()).await;
    refused(&mut ws, ErrorCode::BadMessage).await;
    pid = still_usable(&mut ws, pid, &mut seen).await;

    // A resume naming no session: refused, this box kept.
    ws.send_json(json!({ "type": "resume", "session": "0123456789abcdef" }))
        .await;
    refused(&mut ws, ErrorCode::NoSuchSession).await;
    pid = still_usable(&mut ws, pid, &mut seen).await;

    // Refused by the engine: the error, then the box shown again as it is.
    if let Some(unavailable) = unavailable {
        ws.send_json(goto(unavailable.as_str())).await;
        let (_, step) = refused(&mut ws, ErrorCode::UnknownStep).await;
        assert_eq!(step, Some(unavailable));
        let again = ws.expect_snapshot(StepId::Host).await;
        assert_eq!(again.pid, pid, "the box is kept");
    }

    ws.send_json(json!({ "type": "back" })).await;
    ws.expect_busy().await;
    refused(&mut ws, ErrorCode::NoSuchMove).await;
    let again = ws.expect_snapshot(StepId::Host).await;
    assert_eq!(again.pid, pid, "back at the first step keeps the box");
    still_usable(&mut ws, pid, &mut seen).await;

    // Next at the last available step.
    let last = steps_of(&server)
        .await
        .into_iter()
        .rfind(|s| s.available)
        .expect("some step is available")
        .id;
    ws.send_json(goto(last.as_str())).await;
    let at_last = ws.expect_snapshot(last).await;
    seen.push(at_last.pid);
    ws.send_json(next()).await;
    refused(&mut ws, ErrorCode::NoSuchMove).await;
    let again = ws.expect_snapshot(last).await;
    assert_eq!(again.pid, at_last.pid);
    // goto the current step: the box observed again, not rebuilt.
    ws.send_json(goto(last.as_str())).await;
    let same = ws.expect_snapshot(last).await;
    assert_eq!((same.pid, same.rebuilt), (at_last.pid, false));
    ws.send_json(goto("host")).await;
    // A replay may be announced like back and reset announce theirs.
    let home = snapshot_at(&mut ws, StepId::Host).await;
    assert_eq!(home.step, StepId::Host);
    seen.push(home.pid);
    // However many boxes the way there took, one is left.
    assert_eq!(server.helpers(), vec![home.pid], "one box per connection");
    still_usable(&mut ws, home.pid, &mut seen).await;

    ws.close().await;
    stop_and_check(server, &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_64_kib_closes_the_connection() {
    let server = Server::start(&[]);
    let (mut ws, _id, host) = Ws::open(&server).await;
    ws.send_json(json!({ "type": "next", "pad": "x".repeat(100 * 1024) }))
        .await;
    match ws.next_event(Duration::from_secs(10)).await {
        Event::Closed(Some(frame)) => assert_eq!(frame.code, CloseCode::Size, "{frame:?}"),
        other => panic!("expected a close frame with 1009 (message too big), got {other:?}"),
    }
    // The box outlives its socket for the grace period; shutdown ends it.
    stop_and_check(server, &[host.pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_origin_cannot_open_the_websocket() {
    let server = Server::start(&[]);
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        match Ws::connect(&server, &[("Origin", origin)]).await {
            Err(WsError::Http(response)) => assert_eq!(response.status(), 403, "{origin}"),
            Err(other) => panic!("{origin}: expected HTTP 403, got {other}"),
            Ok(_) => panic!("{origin}: the upgrade was accepted"),
        }
        assert_eq!(
            server.helpers(),
            Vec::<u32>::new(),
            "{origin}: a box was started"
        );
    }
    // The server's own origin is let in.
    let own_origin = format!("http://{}", server.host());
    let mut ws = Ws::connect(&server, &[("Origin", &own_origin)])
        .await
        .expect("the page's own origin is allowed");
    ws.expect_session().await;
    let host = ws.expect_snapshot(StepId::Host).await;
    // Only that connection's box exists: the refused ones started none.
    assert_eq!(server.helpers(), vec![host.pid]);
    ws.close().await;
    stop_and_check(server, &[host.pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_header_is_refused() {
    let server = Server::start(&[]);
    let port = server.port();
    for host in [
        format!("evil.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1).max(1)),
        "127.0.0.1".to_owned(),
    ] {
        let response = http_get(server.addr, "/api/health", &[("Host", &host)]).await;
        assert_eq!(response.status, 403, "Host {host}: {}", response.text());
        assert!(!response.text().contains("\"ok\""), "{host}");
    }
    for host in [
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        server.host(),
    ] {
        let response = http_get(server.addr, "/api/health", &[("Host", &host)]).await;
        assert_eq!(response.status, 200, "Host {host}: {}", response.text());
    }
    match Ws::connect(&server, &[("Host", &format!("evil.example:{port}"))]).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        Err(other) => panic!("expected HTTP 403, got {other}"),
        Ok(_) => panic!("the upgrade with a foreign Host was accepted"),
    }
    assert_eq!(
        server.helpers(),
        Vec::<u32>::new(),
        "a refused upgrade started a box"
    );
    stop_and_check(server, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_at_once_each_get_their_own_box() {
    let server = Server::start(&[]);
    let clients = (0..8).map(|_| async {
        let (mut ws, id, host) = Ws::open(&server).await;
        ws.send_json(next()).await;
        let chroot = ws.expect_snapshot(StepId::Chroot).await;
        ws.send_json(next()).await;
        let uts = ws.expect_snapshot(StepId::Uts).await;
        (ws, id, host, chroot, uts)
    });
    let results = futures::future::join_all(clients).await;
    let mut pids = Vec::new();
    let mut roots = Vec::new();
    let mut ids = Vec::new();
    for (_, id, host, chroot, uts) in &results {
        assert_eq!(
            (chroot.pid, uts.pid),
            (host.pid, host.pid),
            "forward keeps each box"
        );
        assert_eq!(separated_then(host), Vec::<&str>::new());
        assert_eq!(separated_then(chroot), Vec::<&str>::new());
        assert_eq!(separated(uts), vec!["uts"]);
        roots.push(root_checked(uts));
        assert_eq!(
            chroot.box_process.root, uts.box_process.root,
            "the same box, the same root"
        );
        assert_eq!(hostname_in(uts.pid), BOX_HOSTNAME);
        pids.push(host.pid);
        ids.push(id.clone());
    }
    let mut unique_pids = pids.clone();
    unique_pids.sort_unstable();
    unique_pids.dedup();
    assert_eq!(unique_pids.len(), 8, "{pids:?}");
    let mut distinct = roots.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        8,
        "each box has a root of its own: {roots:?}"
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "session ids are distinct");
    let uts_inodes: std::collections::HashSet<u64> =
        results.iter().map(|r| r.4.namespaces.uts.boxed).collect();
    assert_eq!(uts_inodes.len(), 8, "each box has its own UTS namespace");
    assert_eq!(server.helpers(), unique_pids);
    for (ws, ..) in results {
        ws.close().await;
    }
    stop_and_check(server, &pids);
    assert_roots_removed(&roots);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_takes_over_the_same_box() {
    let server = Server::start(&[]);
    let (mut first, first_id, host) = Ws::open(&server).await;
    first.send_json(next()).await;
    let chroot = first.expect_snapshot(StepId::Chroot).await;
    assert_eq!(chroot.pid, host.pid);
    first.close().await;

    let (mut second, second_id, fresh) = Ws::open(&server).await;
    assert_ne!(second_id, first_id);
    assert_ne!(fresh.pid, chroot.pid);
    // The server notices the first socket's end on its own schedule: until it
    // has, the first box is still attached and resume is refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        second
            .send_json(json!({ "type": "resume", "session": first_id }))
            .await;
        match second.recv().await {
            ServerMessage::Session { id } => {
                assert_eq!(id, first_id);
                break;
            }
            ServerMessage::Error {
                code: ErrorCode::NoSuchSession,
                ..
            } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("expected the first session back, got {other:?}"),
        }
    }
    let resumed = second.expect_snapshot(StepId::Chroot).await;
    assert_eq!(resumed.pid, chroot.pid, "the same box, the same process");
    assert!(!resumed.rebuilt);
    assert_eq!(root_checked(&resumed), root_checked(&chroot));
    wait_gone(fresh.pid, GONE_TIMEOUT).expect("the second connection's own box is destroyed");
    assert_eq!(server.helpers(), vec![chroot.pid]);

    // The resumed box is driven on from where it stood.
    second.send_json(next()).await;
    let uts = second.expect_snapshot(StepId::Uts).await;
    assert_eq!(uts.pid, chroot.pid);
    // The second connection's own session is gone for good.
    second
        .send_json(json!({ "type": "resume", "session": second_id }))
        .await;
    second.expect_error(ErrorCode::NoSuchSession).await;

    second.close().await;
    stop_and_check(server, &[host.pid, fresh.pid]);
    assert_roots_removed(std::slice::from_ref(&chroot.box_process.root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_page_keeps_its_box_only_for_the_grace_period() {
    let server = Server::start(&["--grace", "1"]);
    let (mut ws, _id, host) = Ws::open(&server).await;
    ws.send_json(next()).await;
    ws.expect_snapshot(StepId::Chroot).await;
    ws.close().await;
    let closed = Instant::now();
    wait_gone(host.pid, Duration::from_secs(10)).expect("the helper dies after the grace period");
    assert!(
        closed.elapsed() >= Duration::from_millis(900),
        "the box died before its grace period ({:?})",
        closed.elapsed()
    );
    assert_eq!(server.helpers(), Vec::<u32>::new());
    stop_and_check(server, &[host.pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_boxes_refuses_the_connection_beyond() {
    let server = Server::start(&["--max-boxes", "2", "--grace", "0"]);
    let (a, _, box_a) = Ws::open(&server).await;
    let (b, _, box_b) = Ws::open(&server).await;
    let mut third = Ws::connect(&server, &[])
        .await
        .expect("the upgrade itself succeeds");
    match third.recv().await {
        ServerMessage::Error {
            code: ErrorCode::TooManyBoxes,
            message,
            ..
        } => assert!(message.contains('2'), "{message}"),
        other => panic!("expected too_many_boxes, got {other:?}"),
    }
    match third.next_event(Duration::from_secs(10)).await {
        Event::Closed(_) | Event::Ended(_) => {}
        other => panic!("the refused socket should close, got {other:?}"),
    }
    let mut both = vec![box_a.pid, box_b.pid];
    both.sort_unstable();
    assert_eq!(server.helpers(), both, "no third box");

    // A closed page frees its place once its grace (0 s here) is over.
    a.close().await;
    wait_gone(box_a.pid, GONE_TIMEOUT).expect("the closed page's box expires");
    let (c, _, box_c) = Ws::open(&server).await;
    assert_ne!(box_c.pid, box_b.pid);
    b.close().await;
    c.close().await;
    stop_and_check(server, &[box_a.pid, box_b.pid, box_c.pid]);
}

/// The ledger files of the instance with this pid.
fn ledger_files(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("{pid}-");
    std::fs::read_dir(ledger_dir())
        .map(|listing| {
            listing
                .flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with(&prefix) && name.ends_with(".json")
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_every_helper_and_removes_the_ledger() {
    let server = Server::start(&[]);
    let (mut live, _, first) = Ws::open(&server).await;
    live.send_json(goto("uts")).await;
    live.expect_snapshot(StepId::Uts).await;
    let (_idle, _, second) = Ws::open(&server).await;
    let (detached, _, third) = Ws::open(&server).await;
    detached.close().await;
    let mut pids = vec![first.pid, second.pid, third.pid];
    pids.sort_unstable();
    assert_eq!(server.helpers(), pids);

    // The ledger names exactly the live helpers.
    let files = ledger_files(server.pid());
    assert_eq!(files.len(), 1, "one ledger per instance: {files:?}");
    let entries: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&files[0]).expect("ledger readable")).expect("JSON");
    let mut recorded: Vec<u32> = entries
        .iter()
        .filter(|e| e["kind"] == "process")
        .map(|e| e["pid"].as_u64().expect("pid") as u32)
        .collect();
    recorded.sort_unstable();
    assert_eq!(recorded, pids, "{entries:?}");

    // SIGTERM with sockets still open.
    let server_pid = server.pid();
    let status = server.stop();
    assert!(status.success(), "serve exited {status}");
    assert_all_gone(&pids);
    assert_eq!(ledger_files(server_pid), Vec::<std::path::PathBuf>::new());
    match live.next_event(Duration::from_secs(10)).await {
        Event::Closed(_) | Event::Ended(_) => {}
        other => panic!("the socket should end with the server, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_step_reports_the_errno_and_keeps_a_usable_box() {
    // A rootfs with no /proc to bind: the chroot step fails with ENOENT.
    let data = TempData::rootfs_without("proc");
    let server = Server::start_with_env(&[], &[("DAMDA_DATA", &data.text())]);
    let (mut ws, _, host) = Ws::open(&server).await;
    ws.send_json(next()).await;
    match ws.recv().await {
        ServerMessage::Error {
            code: ErrorCode::StepFailed,
            step,
            error: Some(error),
            message,
        } => {
            assert_eq!(step, Some(StepId::Chroot));
            assert_eq!(
                (error.errno, error.errno_name.as_str()),
                (2, "ENOENT"),
                "{error:?}"
            );
            assert!(error.syscall.contains("proc"), "{error:?}");
            assert!(!message.is_empty());
        }
        other => panic!("expected step_failed, got {other:?}"),
    }
    // The box is rebuilt at the step before and shown.
    let kept = ws.expect_snapshot(StepId::Host).await;
    assert_ne!(kept.pid, host.pid, "the failed box was replaced");
    wait_gone(host.pid, GONE_TIMEOUT).expect("the failed box is destroyed");
    assert_eq!(separated(&kept), Vec::<&str>::new());
    ws.send_json(goto("host")).await;
    let again = ws.expect_snapshot(StepId::Host).await;
    assert_eq!(again.pid, kept.pid);
    ws.close().await;
    stop_and_check(server, &[host.pid, kept.pid]);
    assert_eq!(mounts_under(&data.dir), Vec::<String>::new(), "mounts left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_box_that_cannot_start_is_box_failed() {
    // Where the boxes' directories go is a file: no box can be made.
    let data = TempData::rootfs_without("proc");
    std::fs::write(data.dir.join("boxes"), "not a directory").expect("writing the blocker");
    let server = Server::start_with_env(&[], &[("DAMDA_DATA", &data.text())]);
    let mut ws = Ws::connect(&server, &[])
        .await
        .expect("the upgrade succeeds");
    ws.expect_error(ErrorCode::BoxFailed).await;
    match ws.next_event(Duration::from_secs(10)).await {
        Event::Closed(_) | Event::Ended(_) => {}
        other => panic!("the socket should close after box_failed, got {other:?}"),
    }
    assert_eq!(server.helpers(), Vec::<u32>::new());
    stop_and_check(server, &[]);
    assert_eq!(mounts_under(&data.dir), Vec::<String>::new(), "mounts left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_box_outlives_the_servers_idle_threads() {
    // The server starts helpers from blocking threads, which tokio retires
    // after 10 s idle; a helper must not die with the thread that forked it
    // (PR_SET_PDEATHSIG fires on the *thread's* exit).
    let server = Server::start(&[]);
    let (mut ws, _id, host) = Ws::open(&server).await;
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(15) {
        assert!(
            pid_exists(host.pid) && pid_state(host.pid).as_deref() != Some("Z"),
            "the idle box {} died after {:?}",
            host.pid,
            watched.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ws.send_json(next()).await;
    let chroot = ws.expect_snapshot(StepId::Chroot).await;
    assert_eq!(chroot.pid, host.pid, "still the same box");
    ws.close().await;
    stop_and_check(server, &[host.pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn which_names_the_layer_and_changes_follow_the_box() {
    let server = Server::start(&[]);
    let (mut ws, _id, host) = Ws::open(&server).await;
    let which = |path: &str| json!({"type": "which", "path": path});
    // Before the overlay step there are no layers to ask about.
    ws.send_json(which("/etc/passwd")).await;
    refused(&mut ws, ErrorCode::NotYet).await;
    ws.send_json(which("etc/passwd")).await;
    refused(&mut ws, ErrorCode::BadMessage).await;

    ws.send_json(goto("overlay")).await;
    let overlay = snapshot_at(&mut ws, StepId::Overlay).await;
    let layers = &image_view(&overlay).layers;
    let provider = |path: &str| {
        layers
            .iter()
            .rposition(|l| {
                std::path::Path::new(&l.dir)
                    .join(path.trim_start_matches('/'))
                    .exists()
            })
            .expect("some layer has it")
    };
    for path in ["/etc/passwd", "/bin/busybox", "/www/index.html"] {
        ws.send_json(which(path)).await;
        match ws.recv().await {
            ServerMessage::Which {
                path: answered,
                provenance,
            } => {
                assert_eq!(answered, path);
                assert_eq!(
                    provenance,
                    damda_protocol::Provenance::Layer {
                        index: provider(path)
                    }
                );
            }
            other => panic!("expected which, got {other:?}"),
        }
    }
    // A change in the box arrives as the upper directory's new listing.
    let out = sh_as_box_root(overlay.pid, "echo hi > /new-file");
    assert!(out.status.success(), "{out:?}");
    let upper = loop {
        match ws.next_event(Duration::from_secs(10)).await {
            Event::Message(_, ServerMessage::Changes { upper })
                if upper.iter().any(|e| e.path == "/new-file") =>
            {
                break upper
            }
            Event::Message(..) => continue,
            other => panic!("expected changes, got {other:?}"),
        }
    };
    assert!(
        upper.iter().all(|e| !e.path.starts_with("/dev")),
        "{upper:?}"
    );
    ws.send_json(which("/new-file")).await;
    match ws.recv().await {
        ServerMessage::Which { provenance, .. } => {
            assert_eq!(provenance, damda_protocol::Provenance::Upper)
        }
        other => panic!("expected which, got {other:?}"),
    }
    ws.close().await;
    stop_and_check(server, &[host.pid, overlay.pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_makes_an_image_a_second_box_is_built_from() {
    // A data directory of its own, so the committed image goes with it.
    let data = TempData::with_rootfs("commit");
    let images = data_dir().join("images").to_string_lossy().into_owned();
    run_ok(
        "cp",
        &["-a", &images, &data.dir.join("images").to_string_lossy()],
    );
    let server = Server::start_with_env(&[], &[("DAMDA_DATA", &data.text())]);
    let (mut ws, _id, host) = Ws::open(&server).await;
    let commit = |name: &str| json!({"type": "commit", "name": name});
    ws.send_json(commit("damda.local/too-early:1")).await;
    ws.expect_busy().await;
    refused(&mut ws, ErrorCode::NotYet).await;

    ws.send_json(goto("overlay")).await;
    let overlay = snapshot_at(&mut ws, StepId::Overlay).await;
    let base = image_view(&overlay).clone();
    let change = sh_as_box_root(
        overlay.pid,
        "echo committed >> /etc/motd && rm /www/index.html",
    );
    assert!(change.status.success(), "{change:?}");

    ws.send_json(commit("not a name")).await;
    ws.expect_busy().await;
    refused(&mut ws, ErrorCode::BadMessage).await;
    let name = "damda.local/my-box:1";
    ws.send_json(commit(name)).await;
    ws.expect_busy().await;
    let layers = match ws.recv().await {
        ServerMessage::Committed {
            name: made,
            id,
            layers,
        } => {
            assert_eq!(made, name);
            assert_eq!(id.len(), 12);
            layers
        }
        other => panic!("expected committed, got {other:?}"),
    };
    assert_eq!(layers.len(), base.layers.len() + 1, "one new layer on top");
    for (shared, original) in layers.iter().zip(&base.layers) {
        assert_eq!(
            (&shared.digest, &shared.dir),
            (&original.digest, &original.dir),
            "shared, not copied"
        );
    }
    // The new layer is a plain tar: the whiteout became a .wh. entry.
    let top = std::path::Path::new(&layers.last().unwrap().dir);
    assert!(top.join("etc/motd").is_file());
    assert_whiteout(&top.join("www/index.html"));
    let current = ws.expect_snapshot(StepId::Overlay).await;
    assert!(image_view(&current).available.contains(&name.to_owned()));

    // A second box from the committed image: the change is in its root.
    ws.send_json(json!({"type": "image", "name": name})).await;
    ws.expect_busy().await;
    let rebuilt = ws.expect_snapshot(StepId::Overlay).await;
    assert_eq!(image_view(&rebuilt).name, name);
    let seen = sh_as_box_root(rebuilt.pid, "tail -n 1 /etc/motd; ls /www");
    assert!(seen.stdout.starts_with("committed\n"), "{seen:?}");
    assert!(
        !seen.stdout.contains("index.html"),
        "deleted in the image too: {seen:?}"
    );
    ws.close().await;
    stop_and_check(server, &[host.pid, overlay.pid, rebuilt.pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_reports_progress_and_the_image_is_used() {
    // A data directory without images: the import is what brings one.
    let data = TempData::with_rootfs("import");
    let server = Server::start_with_env(&[], &[("DAMDA_DATA", &data.text())]);
    let (mut ws, _id, host) = Ws::open(&server).await;
    let import = |path: &str| json!({"type": "import", "path": path});
    ws.send_json(import("relative/path")).await;
    refused(&mut ws, ErrorCode::BadMessage).await;
    ws.send_json(import("/nonexistent/image.tar")).await;
    let (message, _) = refused(&mut ws, ErrorCode::BadMessage).await;
    assert!(message.contains("/nonexistent/image.tar"), "{message}");

    // The prepared store is itself an OCI image layout.
    let layout = data_dir().join("images");
    ws.send_json(import(&layout.to_string_lossy())).await;
    let mut stages = Vec::new();
    let names = loop {
        match ws.recv().await {
            ServerMessage::Progress(progress) => {
                let (done, total) = (progress.done, progress.total);
                assert!(done <= total, "{done} of {total}");
                stages.push(progress.stage);
            }
            ServerMessage::Imported { names } => break names,
            other => panic!("expected progress, got {other:?}"),
        }
    };
    assert!(stages.contains(&ImportStage::Unpacking), "{stages:?}");
    assert!(
        names.contains(&"damda.local/busybox-httpd:latest".to_owned()),
        "{names:?}"
    );
    ws.expect_snapshot(StepId::Host).await;
    // A box of this server can now be built on it.
    ws.send_json(goto("overlay")).await;
    let overlay = snapshot_at(&mut ws, StepId::Overlay).await;
    let view = image_view(&overlay);
    assert!(
        view.layers.iter().all(|l| l.dir.starts_with(&data.text())),
        "the imported layers"
    );
    ws.close().await;
    stop_and_check(server, &[host.pid, overlay.pid]);
}
