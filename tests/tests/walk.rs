//! `damda walk`: the box seen from outside with the real tools, and the lines
//! the walk prints.

use damda_e2e::*;
use damda_protocol::{NsKind, StepFailure, StepId};
use serde_json::Value;

/// The lsns type name of a namespace kind.
fn lsns_type(kind: NsKind) -> &'static str {
    kind.proc_name()
}

#[test]
fn held_uts_box_agrees_with_readlink_lsns_and_nsenter() {
    become_subreaper();
    let walk = HeldWalk::start("uts");
    let snapshot = walk.last().clone();
    let pid = walk.pid();
    let root = snapshot.box_process.root.clone();
    assert_box_root(&root);

    // The same pid all the way: forward steps apply to the live box.
    let pids: Vec<u32> = walk.snapshots.iter().map(|s| s.pid).collect();
    assert_eq!(pids, vec![pid; 3], "{:?}", walk.lines);
    assert_eq!(
        ppid_of(pid),
        Some(walk.walk_pid()),
        "the box is the walk's child"
    );
    assert_eq!(snapshot.host_process.pid, walk.walk_pid());

    // readlink /proc/PID/ns/* against our own namespaces: only uts differs.
    let own = own_ns();
    let boxed = ns_of(pid);
    assert_eq!(differing(&boxed, &own), vec!["uts"]);
    assert_eq!(snapshot_box_ns(&snapshot), boxed, "snapshot box inodes");
    // The walk and the test both live in the init namespaces.
    assert_eq!(snapshot_host_ns(&snapshot), own, "snapshot host inodes");

    // lsns agrees with the snapshot for every type it lists.
    let listed = lsns_of(pid);
    assert!(listed.len() >= 7, "lsns listed only {listed:?}");
    for (kind_name, inode) in &listed {
        let kind = NsKind::ALL
            .into_iter()
            .find(|k| lsns_type(*k) == kind_name)
            .unwrap_or_else(|| panic!("lsns listed an unknown type {kind_name}"));
        assert_eq!(
            snapshot.namespaces.get(kind).boxed,
            *inode,
            "lsns {kind_name} vs snapshot"
        );
    }
    assert!(listed.iter().any(|(t, _)| t == "uts"), "{listed:?}");

    // The box's hostname, read by joining its UTS namespace.
    let host_name = own_hostname();
    assert_ne!(host_name, BOX_HOSTNAME, "the test machine is not the box");
    assert_eq!(hostname_in(pid), BOX_HOSTNAME);
    assert_eq!(snapshot.box_process.hostname, BOX_HOSTNAME);
    assert_eq!(snapshot.host_process.hostname, host_name);
    assert_eq!(own_hostname(), host_name, "the host kept its name");

    // Root and working directory are the box's root.
    assert_eq!(root_of(pid), root);
    assert_eq!(
        readlink(&[format!("/proc/{pid}/cwd")]).remove(0),
        root,
        "cwd inside the new root"
    );
    assert_eq!(snapshot.box_process.cwd, root);

    // Only stdio pipes and the control socket; nothing on a path.
    let fds = fds_of(pid);
    let numbers: Vec<u32> = fds.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![0, 1, 2, 3], "{fds:?}");
    for (n, target) in &fds {
        assert!(!target.starts_with('/'), "fd {n} -> {target}");
    }
    assert!(
        fds[..3].iter().all(|(_, t)| t.starts_with("pipe:[")),
        "{fds:?}"
    );
    assert!(fds[3].1.starts_with("socket:["), "{fds:?}");

    // The helper runs from the sealed memfd, never the host binary.
    assert_eq!(exe_of(pid).as_deref(), Some(HELPER_EXE));

    // Exits cleanly, its box's process and root gone, no helper orphaned.
    walk.end_cleanly();
}

#[test]
fn every_line_has_all_eight_namespaces_as_numbers() {
    let run = walk(&["--to", "uts"]);
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let steps: Vec<&str> = run
        .lines
        .iter()
        .map(|l| l["step"].as_str().expect("step is a string"))
        .collect();
    assert_eq!(steps, ["host", "chroot", "uts"]);
    let own = own_ns();
    let mut pids = Vec::new();
    for line in &run.lines {
        let step = &line["step"];
        assert!(line["pid"].is_u64(), "{step}: pid {}", line["pid"]);
        assert_eq!(line["rebuilt"], Value::Bool(false), "{step}");
        let namespaces = line["namespaces"].as_object().expect("namespaces object");
        let mut keys: Vec<&str> = namespaces.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"],
            "{step}"
        );
        for (key, pair) in namespaces {
            let pair = pair.as_object().expect("a pair");
            assert_eq!(pair.len(), 2, "{step} {key}: {pair:?}");
            assert!(pair["host"].as_u64().is_some_and(|n| n > 0), "{step} {key}");
            assert!(pair["box"].as_u64().is_some_and(|n| n > 0), "{step} {key}");
        }
        for key in ["process", "host_process"] {
            let process = &line[key];
            assert!(process["pid"].is_u64(), "{step} {key}");
            assert_eq!(
                process["uid"].as_array().map(Vec::len),
                Some(4),
                "{step} {key}"
            );
            assert_eq!(
                process["gid"].as_array().map(Vec::len),
                Some(4),
                "{step} {key}"
            );
            assert!(process["nspid"].is_array(), "{step} {key}");
            assert!(process["cgroups"].is_array(), "{step} {key}");
        }
        assert!(
            line["commands"]
                .as_array()
                .is_some_and(|c| !c.is_empty() && c.iter().all(|c| c["shell"].is_string())),
            "{step}: commands"
        );
        assert!(
            line["syscalls"]
                .as_array()
                .is_some_and(|c| c.iter().all(|c| c["call"].is_string())),
            "{step}: syscalls"
        );

        let snapshot = parse_snapshot(line);
        assert_eq!(
            snapshot_host_ns(&snapshot),
            own,
            "{step}: host = the walk, in our namespaces"
        );
        assert_eq!(snapshot.box_process.pid, snapshot.pid);
        assert_eq!(snapshot.box_process.nspid, vec![snapshot.pid], "{step}");
        assert_eq!(snapshot.box_process.uid, [0; 4], "{step}");
        if snapshot.step == StepId::Host {
            assert_eq!(snapshot.box_process.root, "/");
        } else {
            // The walk has ended: only the path is left to check.
            assert!(
                is_box_root_path(&snapshot.box_process.root),
                "{step}: {}",
                snapshot.box_process.root
            );
        }
        pids.push(snapshot.pid);
    }
    assert!(pids.iter().all(|p| *p == pids[0]), "{pids:?}");

    let snapshots: Vec<_> = run.lines.iter().map(parse_snapshot).collect();
    let separated: Vec<Vec<&str>> = snapshots
        .iter()
        .map(|s| differing(&snapshot_box_ns(s), &snapshot_host_ns(s)))
        .collect();
    assert_eq!(separated, vec![vec![], vec![], vec!["uts"]]);
    let calls = |i: usize| -> Vec<String> {
        snapshots[i]
            .syscalls
            .iter()
            .map(|s| s.call.clone())
            .collect()
    };
    assert!(calls(0).is_empty(), "host makes no call: {:?}", calls(0));
    assert!(
        calls(1).iter().any(|c| c.starts_with("chroot(")),
        "{:?}",
        calls(1)
    );
    assert!(
        calls(2)
            .iter()
            .any(|c| c.starts_with("unshare(") && c.contains("CLONE_NEWUTS")),
        "{:?}",
        calls(2)
    );
    assert!(
        calls(2).iter().any(|c| c.starts_with("sethostname(")),
        "{:?}",
        calls(2)
    );
    assert_all_gone(&[pids[0]]);
    assert_roots_removed(&[snapshots[2].box_process.root.clone()]);
}

#[test]
fn chroot_separates_no_namespace_only_the_root() {
    become_subreaper();
    let walk = HeldWalk::start("chroot");
    let snapshot = walk.last().clone();
    let pid = walk.pid();
    let root = snapshot.box_process.root.clone();
    assert_box_root(&root);
    let boxed = ns_of(pid);
    assert_eq!(differing(&boxed, &own_ns()), Vec::<&str>::new());
    assert_eq!(snapshot_box_ns(&snapshot), boxed);
    assert_eq!(
        differing(&snapshot_box_ns(&snapshot), &snapshot_host_ns(&snapshot)),
        Vec::<&str>::new()
    );
    assert_eq!(root_of(pid), root);
    // The lesson's command names this very directory.
    assert!(
        snapshot
            .commands
            .iter()
            .any(|c| c.shell.contains(&format!("chroot {root}"))),
        "{:?}",
        snapshot.commands
    );
    // Still the host's hostname: no UTS namespace yet.
    assert_eq!(hostname_in(pid), own_hostname());
    assert_eq!(snapshot.box_process.hostname, own_hostname());
    // Exits cleanly, its box's process and root gone, no helper orphaned.
    walk.end_cleanly();
}

#[test]
fn missing_rootfs_fails_at_chroot_with_enoent() {
    become_subreaper();
    let run = walk(&["--to", "uts", "--rootfs", "/nonexistent"]);
    assert!(!run.status.success(), "exit {}", run.status);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert_eq!(run.lines.len(), 2, "{:?}", run.lines);
    let host = parse_snapshot(&run.lines[0]);
    assert_eq!(host.step, StepId::Host);
    let failure: StepFailure = serde_json::from_value(run.lines[1].clone())
        .unwrap_or_else(|e| panic!("not a failure line ({e}): {}", run.lines[1]));
    assert_eq!(failure.step, StepId::Chroot);
    assert_eq!(failure.error.errno, 2, "{:?}", failure.error);
    assert_eq!(failure.error.errno_name, "ENOENT");
    assert!(
        failure.error.syscall.contains("/nonexistent"),
        "{:?}",
        failure.error
    );
    assert!(!failure.error.message.is_empty());
    assert_all_gone(&[host.pid]);
    assert_no_orphaned_helpers();
}

#[test]
fn unknown_step_is_refused_with_the_list() {
    let run = walk(&["--to", "vm"]);
    assert!(!run.status.success());
    assert!(run.lines.is_empty(), "{:?}", run.lines);
    assert!(
        run.stderr.contains("vm") && run.stderr.contains("host, chroot, uts"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_refused_chroot_prints_the_errno_line() {
    // A rootfs with no /proc to bind: the chroot step's mount fails, ENOENT.
    become_subreaper();
    // A data directory of its own, so its boxes and ledger are this test's.
    let data = TempData::rootfs_without("proc");
    let rootfs = data.rootfs().to_string_lossy().into_owned();
    let run = walk_with_env(
        &["--to", "uts", "--rootfs", &rootfs],
        &[("DAMDA_DATA", &data.text())],
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert_eq!(run.lines.len(), 2, "{:?}", run.lines);
    let host = parse_snapshot(&run.lines[0]);
    assert_eq!(host.step, StepId::Host);
    let failure: StepFailure = serde_json::from_value(run.lines[1].clone())
        .unwrap_or_else(|e| panic!("not a failure line ({e}): {}", run.lines[1]));
    assert_eq!(failure.step, StepId::Chroot);
    assert_eq!(
        (failure.error.errno, failure.error.errno_name.as_str()),
        (2, "ENOENT"),
        "{:?}",
        failure.error
    );
    assert!(
        failure.error.syscall.contains("proc"),
        "{:?}",
        failure.error
    );
    assert_all_gone(&[host.pid]);
    assert_no_orphaned_helpers();
    assert_eq!(mounts_under(&data.dir), Vec::<String>::new(), "mounts left");
    let left = |dir: &str| -> Vec<String> {
        std::fs::read_dir(data.dir.join(dir))
            .map(|l| {
                l.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(left("boxes"), Vec::<String>::new(), "box directories left");
    assert_eq!(left("ledger"), Vec::<String>::new(), "ledger files left");
}

#[test]
fn walk_without_to_walks_every_available_step_in_order() {
    become_subreaper();
    let run = walk(&[]);
    assert!(run.status.success(), "{}: {}", run.status, run.stderr);
    let snapshots: Vec<_> = run.lines.iter().map(parse_snapshot).collect();
    assert!(!snapshots.is_empty());
    // The lesson order, one line per step applied; a rebuild reprints the
    // steps it replays, marked rebuilt, without breaking that order.
    let fresh: Vec<StepId> = snapshots
        .iter()
        .filter(|s| !s.rebuilt)
        .map(|s| s.step)
        .collect();
    assert_eq!(fresh.first(), Some(&StepId::Host));
    assert!(
        fresh.windows(2).all(|w| w[0] < w[1]),
        "not in lesson order: {fresh:?}"
    );
    let last = snapshots.last().expect("lines").step;
    let mut covered: Vec<StepId> = snapshots.iter().map(|s| s.step).collect();
    covered.sort();
    covered.dedup();
    let expected: Vec<StepId> = StepId::ALL.iter().copied().filter(|s| *s <= last).collect();
    assert_eq!(covered, expected, "every step up to {last} once at least");
    assert!(last >= StepId::Uts, "{last}");
    for block in snapshots.split(|s| !s.rebuilt).filter(|b| !b.is_empty()) {
        let steps: Vec<StepId> = block.iter().map(|s| s.step).collect();
        assert_eq!(steps[0], StepId::Host, "a replay starts at host: {steps:?}");
        assert!(
            steps.windows(2).all(|w| w[0] < w[1]),
            "replay order {steps:?}"
        );
    }
    // The walk agrees with what the server offers: the last available step.
    let server = Server::start(&[]);
    let infos: Vec<damda_protocol::StepInfo> = serde_json::from_value(
        tokio::runtime::Runtime::new()
            .expect("runtime")
            .block_on(http_get(server.addr, "/api/steps", &[]))
            .json(),
    )
    .expect("step infos");
    drop(server);
    let last_available = infos
        .iter()
        .rev()
        .find(|i| i.available)
        .expect("available")
        .id;
    assert_eq!(last, last_available);

    let pids: Vec<u32> = snapshots.iter().map(|s| s.pid).collect();
    assert_all_gone(&pids);
    let roots: Vec<String> = snapshots
        .iter()
        .map(|s| s.box_process.root.clone())
        .collect();
    assert_roots_removed(&roots);
    assert_eq!(helpers_of(std::process::id()), Vec::<u32>::new());
}

#[test]
fn sweep_check_lists_a_live_box() {
    let walk = HeldWalk::start("chroot");
    let pid = walk.pid();
    let root = walk.last().box_process.root.clone();
    let check = run(
        damda_bin(),
        &["sweep", "--check"],
        std::time::Duration::from_secs(20),
    );
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    assert!(
        check
            .stdout
            .lines()
            .any(|l| l == format!("left behind: process {pid} (box helper)")),
        "{}",
        check.stdout
    );
    if box_dir_of(&root).is_some() {
        // chroot bind-mounts the box's root on the host, where sweep sees it.
        assert!(
            check
                .stdout
                .lines()
                .any(|l| l == format!("left behind: mount {root}")),
            "{}",
            check.stdout
        );
    }
    // Exits cleanly, its box's process and root gone, no helper orphaned.
    walk.end_cleanly();
}
