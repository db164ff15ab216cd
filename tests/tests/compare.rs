//! The VM-vs-container comparison, for real: `damda compare` boots Debian's
//! kernel under qemu and builds a box, runs the same workload in each, and
//! reports every figure on both sides. The figures are checked against the
//! kernel and the files where they can be (sizes exactly, the guest's own
//! `uname -r`), the printed qemu command line is run by hand, and nothing —
//! no qemu, no half-written initramfs, no box — is left afterwards.
//!
//! Each comparison boots VMs (seconds each under emulation): the suite makes
//! few of them, and runs these tests one at a time (.config/nextest.toml).

use damda_e2e::*;
use damda_protocol::{
    Accelerator, CompareStage, Comparison, ErrorCode, Figure, FigureId, FigureUnit, ServerMessage,
    StepId,
};
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn vm_dir() -> PathBuf {
    data_dir().join("vm")
}

/// Whether `pid` is a qemu (by its command line, or its name once it is a
/// zombie without one).
fn is_qemu(pid: u32) -> bool {
    let program = cmdline_of(pid).into_iter().next().unwrap_or_default();
    let name = Path::new(&program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| comm_of(pid))
        .unwrap_or_default();
    name.starts_with("qemu-system")
}

/// qemu processes booting the comparison's initramfs whose parent is not a
/// live damda of this checkout (one another test's server runs is not left
/// behind).
fn orphaned_qemus() -> Vec<String> {
    let damda = std::fs::canonicalize(damda_bin()).expect("the binary under test resolves");
    // A server started before a rebuild runs the replaced file.
    let replaced = format!("{} (deleted)", damda.display());
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = cmdline_of(pid);
        if !is_qemu(pid) || !cmdline.iter().any(|a| a.contains("compare-initrd.gz")) {
            continue;
        }
        let parent_is_damda = ppid_of(pid)
            .and_then(exe_of)
            .is_some_and(|exe| Path::new(&exe) == damda || exe == replaced);
        if !parent_is_damda {
            left.push(format!("{pid}: {}", cmdline.join(" ")));
        }
    }
    left
}

/// No qemu is left under the server once its comparisons are over.
fn assert_no_qemu_under(server: &Server) {
    poll(GONE_TIMEOUT, "the server's qemu to be gone", || {
        let qemus: Vec<String> = descendants_of(server.pid())
            .into_iter()
            .filter(|pid| is_qemu(*pid))
            .map(|pid| format!("{pid}: {}", cmdline_of(pid).join(" ")))
            .collect();
        if qemus.is_empty() {
            Ok(())
        } else {
            Err(format!("{qemus:?}"))
        }
    });
}

/// The figure `id` of a comparison.
fn figure(comparison: &Comparison, id: FigureId) -> &Figure {
    comparison
        .figures
        .iter()
        .find(|f| f.id == id)
        .unwrap_or_else(|| panic!("no {id:?} among {:?}", comparison.figures))
}

fn partial_initrds() -> Vec<String> {
    std::fs::read_dir(vm_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".partial-"))
        .collect()
}

/// The checks every comparison must pass, whoever asked for it.
fn check_comparison(comparison: &Comparison, runs: u32) {
    assert_eq!(comparison.runs, runs);
    // The guest said who it is from inside: its /init line with `uname -r`.
    assert!(
        comparison.guest_init.starts_with("DAMDA-VM-INIT uptime ")
            && comparison
                .guest_init
                .ends_with(&format!("kernel {}", comparison.guest_kernel)),
        "{}",
        comparison.guest_init
    );
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(comparison.host_kernel, release.trim());
    // What ran is named as it ran: the accelerator on qemu's command line,
    // and TCG explained by the trial.
    let accel = match comparison.accelerator {
        Accelerator::Kvm => "-accel kvm",
        Accelerator::Tcg => "-accel tcg",
    };
    assert!(
        comparison.vm_command.contains(accel),
        "{}",
        comparison.vm_command
    );
    if comparison.accelerator == Accelerator::Tcg {
        assert!(
            comparison.kvm_trial.contains("TCG"),
            "{}",
            comparison.kvm_trial
        );
    }
    assert!(comparison.vm_command.contains("restrict=on"));
    assert!(comparison.workload.contains("sha256sum"));
    assert_eq!(comparison.vm_cpus, 1);
    assert_eq!(comparison.container_cpus, 1.0);
    let ids: Vec<FigureId> = comparison.figures.iter().map(|f| f.id).collect();
    assert_eq!(ids, FigureId::ALL, "every figure once, in order");
    for id in FigureId::ALL {
        let figure = figure(comparison, id);
        for (side, spread) in [("container", &figure.container), ("vm", &figure.vm)] {
            assert!(spread.median > 0.0, "{id:?} {side}: {spread:?}");
            assert!(spread.min <= spread.median && spread.median <= spread.max);
            let expected = if id == FigureId::Disk {
                1
            } else {
                runs as usize
            };
            assert_eq!(spread.samples.len(), expected, "{id:?} {side}");
        }
        assert_eq!(figure.emulated, id != FigureId::Disk, "{id:?}");
    }
    // A whole guest OS against a few processes: qemu holds the guest's
    // kernel and page cache, the box's cgroup only its processes.
    let memory = figure(comparison, FigureId::Memory);
    assert_eq!(memory.unit, FigureUnit::Bytes);
    assert!(memory.vm.median > memory.container.median, "{memory:?}");
    // The workload's first line comes before its exit, on both sides.
    let (first, exit) = (
        figure(comparison, FigureId::FirstOutput),
        figure(comparison, FigureId::Exit),
    );
    assert!(first.vm.max <= exit.vm.max, "{first:?} {exit:?}");
    assert!(
        first.container.max <= exit.container.max,
        "{first:?} {exit:?}"
    );
}

/// The disk figure is the files' sizes, byte for byte.
fn check_disk(comparison: &Comparison) {
    let disk = figure(comparison, FigureId::Disk);
    let kernel = std::fs::metadata(vm_dir().join("vmlinuz")).unwrap().len();
    let initrd = std::fs::metadata(vm_dir().join("damda-compare-initrd.gz"))
        .unwrap()
        .len();
    let vm: Vec<(&str, u64)> = disk
        .vm_parts
        .iter()
        .map(|p| (p.name.as_str(), p.bytes))
        .collect();
    assert_eq!(
        vm,
        [
            (
                format!("vmlinuz-{}", comparison.guest_kernel).as_str(),
                kernel
            ),
            ("initrd.gz", initrd)
        ]
    );
    assert_eq!(disk.vm.median, (kernel + initrd) as f64);
    // Each layer part is its blob in the store, named by its short digest.
    let blobs = data_dir().join("images/blobs/sha256");
    let mut total = 0;
    for part in &disk.container_parts {
        let short = part.name.split(['(', ')']).nth(1).unwrap();
        let blob = std::fs::read_dir(&blobs)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(short))
            .unwrap_or_else(|| panic!("no blob {short} for {}", part.name));
        assert_eq!(blob.metadata().unwrap().len(), part.bytes, "{}", part.name);
        total += part.bytes;
    }
    assert_eq!(disk.container_parts.len(), 3, "the default image's layers");
    assert_eq!(disk.container.median, total as f64);
}

/// Runs the printed qemu command line by hand (on a free port): the guest
/// boots, runs the workload, serves the image's page through the forward,
/// and powers off when told.
fn boot_by_hand(comparison: &Comparison) {
    let port = free_port();
    let line = comparison
        .vm_command
        .replace("127.0.0.1:8090-:80", &format!("127.0.0.1:{port}-:80"));
    assert_ne!(line, comparison.vm_command, "the forward is on the line");
    // `exec`: the shell becomes qemu, which the guard kills and reaps if
    // an assert below fails.
    let mut qemu = Spawned {
        child: Command::new("sh")
            .args(["-c", &format!("exec {line}")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the printed qemu line"),
    };
    let lines = line_channel(qemu.child.stdout.take().expect("piped"));
    let mut console: Vec<String> = Vec::new();
    poll(
        Duration::from_secs(120),
        "the VM booted by hand to get ready",
        || {
            console.extend(lines.try_iter());
            if console.iter().any(|l| l.contains("DAMDA-VM-READY")) {
                Ok(())
            } else {
                Err(format!("console:\n{}", console.join("\n")))
            }
        },
    );
    for mark in ["start", "cpu", "files", "forks", "end"] {
        let line = format!("DAMDA-WL {mark}");
        assert!(
            console.iter().any(|l| l.trim() == line),
            "{line}:\n{}",
            console.join("\n")
        );
    }
    assert!(console.iter().any(|l| l.trim() == "DAMDA-VM-EXIT 0"));
    let page = get_page(&format!("127.0.0.1:{port}"));
    assert!(page.contains(" 200 "), "{page}");
    assert!(
        page.contains("busybox httpd"),
        "the image's /www page: {page}"
    );
    qemu.child
        .stdin
        .as_mut()
        .expect("piped")
        .write_all(b"stop\n")
        .expect("telling the guest to stop");
    let status = wait_child(
        &mut qemu.child,
        Duration::from_secs(30),
        "qemu to power off",
    );
    assert!(status.success(), "qemu after poweroff -f: {status}");
}

#[test]
fn compare_measures_both_sides_and_the_qemu_line_boots_by_hand() {
    let out = run_ok_within(
        damda_bin(),
        &["compare", "--runs", "1", "--json"],
        COMPARISON_TIMEOUT,
    );
    // Progress went to standard error, stage by stage.
    for stage in [
        "initramfs",
        "trial boot",
        "run 1/1: the box",
        "run 1/1: the VM",
    ] {
        assert!(out.stderr.contains(stage), "{stage}: {}", out.stderr);
    }
    let comparison: Comparison = serde_json::from_str(&out.stdout).unwrap();
    check_comparison(&comparison, 1);
    check_disk(&comparison);
    assert_eq!(orphaned_qemus(), Vec::<String>::new());
    assert_eq!(partial_initrds(), Vec::<String>::new());
    boot_by_hand(&comparison);
    assert_eq!(orphaned_qemus(), Vec::<String>::new());
}

#[test]
fn compare_refuses_a_run_count_out_of_range() {
    let out = run(
        damda_bin(),
        &["compare", "--runs", "0"],
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("1 to 5 runs, not 0"), "{}", out.stderr);
}

/// Over the websocket: bad run counts are refused, a second comparison
/// while one runs is refused, progress comes stage by stage, and the page
/// goes on using its box meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn compare_over_the_websocket_reports_progress_and_runs_one_at_a_time() {
    let server = Server::start(&[]);
    let (mut ws, _, _) = Ws::open(&server).await;
    for runs in [0, 6] {
        ws.send_json(json!({ "type": "compare", "runs": runs }))
            .await;
        ws.expect_error(ErrorCode::BadMessage).await;
    }
    ws.send_json(json!({ "type": "compare", "runs": 1 })).await;
    ws.send_json(json!({ "type": "compare", "runs": 1 })).await;
    ws.send_json(json!({ "type": "next" })).await;
    let mut stages = Vec::new();
    let mut refused = false;
    let mut stepped = false;
    let deadline = Instant::now() + COMPARISON_TIMEOUT;
    let comparison = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next_event(left).await {
            Event::Message(_, ServerMessage::Comparing { stage, run, runs }) => {
                assert_eq!(runs, 1);
                stages.push((stage, run));
            }
            Event::Message(_, ServerMessage::Compared(comparison)) => break *comparison,
            Event::Message(_, ServerMessage::Error { code, message, .. }) => {
                assert_eq!(code, ErrorCode::CompareRunning, "{message}");
                refused = true;
            }
            Event::Message(_, ServerMessage::Snapshot(snapshot)) => {
                assert_eq!(snapshot.step, StepId::Chroot);
                stepped = true;
            }
            Event::Message(..) => {}
            other => panic!("the connection ended during the comparison: {other:?}"),
        }
    };
    assert!(refused, "the second comparison was refused");
    assert!(stepped, "the box moved on while the comparison ran");
    assert_eq!(
        stages,
        [
            (CompareStage::Preparing, 0),
            (CompareStage::KvmTrial, 0),
            (CompareStage::Container, 1),
            (CompareStage::Vm, 1),
        ]
    );
    check_comparison(&comparison, 1);
    assert_eq!(orphaned_qemus(), Vec::<String>::new());
    // The server is free for the next comparison once one ended.
    ws.send_json(json!({ "type": "compare", "runs": 9 })).await;
    ws.expect_error(ErrorCode::BadMessage).await;
    assert_no_qemu_under(&server);
}

/// The comparison's box counts against the server's limit: a full server
/// refuses it with the limit's code, before any VM boots.
#[tokio::test(flavor = "multi_thread")]
async fn compare_on_a_full_server_is_refused_before_anything_starts() {
    let server = Server::start(&["--max-boxes", "1"]);
    let (mut ws, _, _) = Ws::open(&server).await;
    ws.send_json(json!({ "type": "compare", "runs": 1 })).await;
    ws.expect_error(ErrorCode::TooManyBoxes).await;
    assert_eq!(orphaned_qemus(), Vec::<String>::new());
    // The page's own box is untouched and still steps.
    ws.send_json(json!({ "type": "next" })).await;
    ws.expect_snapshot(StepId::Chroot).await;
    assert_no_qemu_under(&server);
}
