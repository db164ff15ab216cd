//! The namespace steps (`pid` … `cgroupns`), each checked from outside the
//! box with the real tools: `readlink /proc/PID/ns/*`, `lsns`, `nsenter`,
//! /proc/PID/{status,uid_map,mountinfo,cgroup}. The snapshot's numbers are
//! compared with what the kernel shows, never trusted alone.

use damda_e2e::*;
use damda_protocol::{LinkState, NsKind, ProcessRow, StepId};

/// Checks four ways that the held box has exactly the namespaces of its own
/// that `step` implies: readlink against our own, the snapshot's numbers,
/// `lsns -p PID`, and a process `nsenter` runs in the expected types.
fn assert_separated_at(walk: &HeldWalk, step: StepId) {
    let expected = separated_at(step);
    let pid = walk.pid();
    let snapshot = walk.last();
    assert_eq!(snapshot.step, step);
    let own = own_ns();
    let boxed = ns_of(pid);
    assert_eq!(
        differing(&boxed, &own),
        expected,
        "{step}: readlink /proc/{pid}/ns/* against /proc/self/ns/*"
    );
    assert_eq!(
        snapshot_box_ns(snapshot),
        boxed,
        "{step}: snapshot box inodes"
    );
    assert_eq!(
        snapshot_host_ns(snapshot),
        own,
        "{step}: snapshot host inodes"
    );
    assert_eq!(
        differing(&snapshot_box_ns(snapshot), &snapshot_host_ns(snapshot)),
        expected,
        "{step}: the snapshot's own comparison"
    );

    // lsns lists each of the eight types once, with the box's inode.
    let listed = lsns_of(pid);
    for (i, kind) in NsKind::ALL.iter().enumerate() {
        let inodes: Vec<u64> = listed
            .iter()
            .filter(|(t, _)| t == kind.proc_name())
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            inodes,
            vec![boxed[i]],
            "{step}: lsns -p {pid}, type {}: {listed:?}",
            kind.proc_name()
        );
    }

    // A process nsenter puts into exactly the expected types (and no
    // other) is in every one of the box's namespaces.
    let mut args: Vec<&str> = NsKind::ALL
        .into_iter()
        .filter(|kind| expected.contains(&kind.proc_name()))
        .map(nsenter_flag)
        .collect();
    args.push("readlink");
    let links: Vec<String> = NsKind::ALL
        .iter()
        .map(|kind| format!("/proc/self/ns/{}", kind.proc_name()))
        .collect();
    args.extend(links.iter().map(String::as_str));
    let entered: Vec<u64> = nsenter_ok(pid, &args).lines().map(parse_ns_link).collect();
    assert_eq!(
        entered,
        boxed.to_vec(),
        "{step}: nsenter -t {pid} {args:?} lands in the box's namespaces"
    );
}

/// The pids a box's own /proc lists, as a shell inside reads them (a
/// builtin loop, so the reader is the only extra process), less the reader.
fn pids_in_box_proc(pid: u32, flags: &[&str]) -> Vec<u32> {
    let mut args = flags.to_vec();
    args.extend([
        "-r",
        "-w",
        "/bin/busybox",
        "sh",
        "-c",
        r#"echo $$; for p in /proc/[0-9]*; do echo "${p#/proc/}"; done"#,
    ]);
    let out = nsenter_ok(pid, &args);
    let mut numbers = out.lines().map(|l| {
        l.trim()
            .parse::<u32>()
            .unwrap_or_else(|e| panic!("{l:?}: {e} in {out}"))
    });
    let reader = numbers.next().expect("the shell's own pid");
    let mut pids: Vec<u32> = numbers.filter(|p| *p != reader).collect();
    pids.sort_unstable();
    pids
}

#[test]
fn pid_step_makes_the_box_pid_1_inside_while_proc_is_still_the_hosts() {
    become_subreaper();
    let walk = HeldWalk::start("pid");
    assert_separated_at(&walk, StepId::Pid);
    let pid = walk.pid();
    let snapshot = walk.last().clone();

    // Two pids: the host's, then 1 in the box's namespace.
    assert_eq!(status_numbers(pid, "NSpid"), vec![u64::from(pid), 1]);
    assert_eq!(snapshot.box_process.nspid, vec![pid, 1]);
    // The namespace applies to children: the box continues as a forked
    // child of the process it was before the step.
    let before = walk.snapshots[walk.snapshots.len() - 2].pid;
    assert_ne!(before, pid, "the pid step forks");
    assert_eq!(ppid_of(pid), Some(before));
    assert_eq!(snapshot.tree.host_view.len(), 1, "{:?}", snapshot.tree);
    assert_eq!(snapshot.tree.host_view[0].nspid, vec![pid, 1]);

    // /proc is still the host's: ps inside lists the host's processes, under
    // their host pids.
    let tree = &snapshot.tree;
    assert!(tree.box_total > 3, "box_total {}", tree.box_total);
    if tree.box_view.len() == tree.box_total {
        let listed: Vec<u32> = tree.box_view.iter().map(|r| r.pid).collect();
        assert!(listed.contains(&walk.walk_pid()), "{listed:?}");
        assert!(listed.contains(&pid), "{listed:?}");
    }
    let seen = pids_in_box_proc(pid, &["-p"]);
    assert!(seen.len() > 3, "{seen:?}");
    assert!(seen.contains(&walk.walk_pid()), "the walk: {seen:?}");
    assert!(seen.contains(&pid), "the box under its host pid: {seen:?}");

    // A shell nsenter starts in the box's PID namespace has two pids too,
    // the inner one what $$ says.
    let out = nsenter_ok(
        pid,
        &[
            "-p",
            "-r",
            "-w",
            "/bin/busybox",
            "sh",
            "-c",
            "echo $$; grep NSpid /proc/self/status",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let inner: u64 = lines[0].trim().parse().expect("$$");
    let nspid: Vec<u64> = lines[1]
        .trim_start_matches("NSpid:")
        .split_whitespace()
        .map(|n| n.parse().expect("NSpid number"))
        .collect();
    assert_eq!(nspid.len(), 2, "{out}");
    assert_eq!(nspid[1], inner, "{out}");
    assert!(inner > 1 && nspid[0] != inner, "{out}");

    walk.end_cleanly();
}

#[test]
fn mnt_step_mounts_a_private_proc_and_leaves_the_host_table_alone() {
    become_subreaper();
    let walk = HeldWalk::start("mnt");
    assert_separated_at(&walk, StepId::Mnt);
    let pid = walk.pid();
    let snapshot = walk.last().clone();
    let root = snapshot.box_process.root.clone();
    assert_box_root(&root);

    let own_table = mountinfo_of(std::process::id());
    let host_proc = own_table
        .iter()
        .rfind(|m| m.point == "/proc")
        .expect("the host has /proc")
        .dev
        .clone();

    // The box's table, seen from its root: / and a fresh proc on /proc.
    let table = mountinfo_of(pid);
    assert!(table.iter().any(|m| m.point == "/"), "{table:#?}");
    let procs: Vec<&MountLine> = table.iter().filter(|m| m.point == "/proc").collect();
    let top = procs
        .iter()
        .find(|m| !procs.iter().any(|other| other.parent == m.id))
        .unwrap_or_else(|| panic!("no proc on /proc: {table:#?}"));
    assert_eq!(top.fstype, "proc", "{top:?}");
    assert_ne!(top.dev, host_proc, "the box's /proc is a new proc mount");
    // Private propagation: nothing in the box's table is shared with a peer.
    for mount in &table {
        assert!(
            !mount.optional.iter().any(|o| o.starts_with("shared:")),
            "{mount:?} still propagates"
        );
    }

    // The host's table: the new proc is not there, and at the box's root
    // only the chroot step's two binds (the host's proc) are.
    assert!(
        own_table.iter().all(|m| m.dev != top.dev),
        "the box's proc ({}) leaked to the host",
        top.dev
    );
    let under_root: Vec<&MountLine> = own_table
        .iter()
        .filter(|m| m.point == root || m.point.starts_with(&format!("{root}/")))
        .collect();
    let points: Vec<&str> = under_root.iter().map(|m| m.point.as_str()).collect();
    assert_eq!(points, vec![root.clone(), format!("{root}/proc")]);
    assert_eq!(under_root[1].dev, host_proc, "{:?}", under_root[1]);

    // ps inside now lists only the box.
    assert_eq!(
        snapshot.tree.box_view,
        vec![ProcessRow {
            pid: 1,
            comm: snapshot.box_process.comm.clone()
        }]
    );
    assert!(snapshot.tree.box_total <= 3, "{:?}", snapshot.tree);
    assert_eq!(pids_in_box_proc(pid, &["-a"]), vec![1]);
    let ps = nsenter_ok(
        pid,
        &["-a", "-r", "-w", "/bin/busybox", "ps", "-o", "pid,comm"],
    );
    let rows = normalise_lines(&ps);
    assert!(rows.len() <= 3, "{ps}");
    assert!(
        rows.contains(&format!("1 {}", snapshot.box_process.comm)),
        "{ps}"
    );

    walk.end_cleanly();
}

#[test]
fn ipc_step_hides_the_hosts_ipc_objects() {
    become_subreaper();
    // Made first, so it is dropped (ipcrm) last, a failure included.
    let queue = SysvQueue::create();
    assert!(queue.on_host(), "ipcs -q lists queue {}", queue.id);
    let before = HeldWalk::start("mnt");
    let after = HeldWalk::start("ipc");
    assert_separated_at(&after, StepId::Ipc);
    let (mnt_box, ipc_box) = (before.pid(), after.pid());

    // The engine's own POSIX queue: seen inside before the step, not after;
    // on the host all along.
    let probe_before = before.last().ipc_probe.clone().expect("a probe at mnt");
    let probe_after = after.last().ipc_probe.clone().expect("a probe at ipc");
    assert!(
        probe_before.on_host && probe_before.in_box,
        "{probe_before:?}"
    );
    assert!(
        probe_after.on_host && !probe_after.in_box,
        "{probe_after:?}"
    );
    let queues = host_mqueues();
    for probe in [&probe_before, &probe_after] {
        let name = probe.name.trim_start_matches('/');
        assert!(queues.iter().any(|q| q == name), "{name} in {queues:?}");
    }

    // A System V queue made on the host, looked for with the host's ipcs
    // run in each box's IPC namespace.
    let listed = |pid: u32| sysv_queue_ids(&nsenter_ok(pid, &["-i", "ipcs", "-q"]));
    assert!(
        listed(mnt_box).contains(&queue.id),
        "at mnt the box shares the host's IPC namespace"
    );
    assert_eq!(
        listed(ipc_box),
        Vec::<u32>::new(),
        "a new IPC namespace is empty"
    );
    let sysvipc = nsenter_ok(ipc_box, &["-i", "cat", "/proc/sysvipc/msg"]);
    assert_eq!(
        normalise_lines(&sysvipc).len(),
        1,
        "only the header: {sysvipc}"
    );
    assert!(queue.on_host(), "still on the host");

    after.end_cleanly();
    before.end_cleanly();
    drop(queue);
}

#[test]
fn net_step_leaves_only_lo_down() {
    become_subreaper();
    let walk = HeldWalk::start("net");
    assert_separated_at(&walk, StepId::Net);
    let pid = walk.pid();

    let links = normalise_lines(&nsenter_ok(pid, &["-n", "ip", "-o", "link"]));
    assert_eq!(links.len(), 1, "{links:?}");
    assert!(links[0].starts_with("1: lo: "), "{links:?}");
    assert!(links[0].contains(" state DOWN "), "{links:?}");
    let addresses = nsenter_ok(pid, &["-n", "ip", "-o", "addr"]);
    assert_eq!(normalise_lines(&addresses), Vec::<String>::new());
    for family in ["-4", "-6"] {
        let routes = nsenter_ok(pid, &["-n", "ip", family, "route", "show", "table", "all"]);
        assert_eq!(normalise_lines(&routes), Vec::<String>::new(), "{family}");
    }
    let route = nsenter_ok(pid, &["-n", "cat", "/proc/net/route"]);
    let routes: Vec<String> = normalise_lines(&route)
        .into_iter()
        .filter(|l| !l.starts_with("Iface"))
        .collect();
    assert_eq!(routes, Vec::<String>::new(), "/proc/net/route");
    for table in ["tcp", "tcp6", "udp", "udp6", "raw", "raw6"] {
        let sockets = nsenter_ok(pid, &["-n", "cat", &format!("/proc/net/{table}")]);
        assert!(
            normalise_lines(&sockets).len() <= 1,
            "sockets in /proc/net/{table}: {sockets}"
        );
    }

    let snapshot = walk.last();
    assert_eq!(
        snapshot.links,
        vec![LinkState {
            name: "lo".into(),
            up: false,
            addresses: vec![]
        }]
    );
    // Before the step the box saw the host's links.
    let at_ipc = &walk.snapshots[walk.snapshots.len() - 2];
    assert_eq!(at_ipc.step, StepId::Ipc);
    assert_ne!(at_ipc.links, snapshot.links);

    walk.end_cleanly();
}

#[test]
fn user_step_maps_root_to_an_unprivileged_uid_and_is_rebuilt_user_first() {
    become_subreaper();
    let walk = HeldWalk::start("user");
    assert_separated_at(&walk, StepId::User);
    let pid = walk.pid();
    let snapshot = walk.last().clone();

    // The kernel refused the lesson order; the box was rebuilt user-first.
    let note = snapshot
        .rebuild
        .clone()
        .expect("the user snapshot says why");
    assert_eq!(note.step, StepId::User);
    assert_eq!(note.refused.errno_name, "EPERM", "{:?}", note.refused);
    assert_eq!(note.refused.errno, 1);
    assert!(
        note.refused.syscall.contains("CLONE_NEWUSER"),
        "{:?}",
        note.refused
    );
    assert_eq!(note.order.first(), Some(&StepId::User), "{:?}", note.order);
    // The box refused in the lesson order is gone, its root too.
    let old: Vec<u32> = walk
        .snapshots
        .iter()
        .filter(|s| !s.rebuilt)
        .map(|s| s.pid)
        .collect();
    assert!(!old.is_empty() && !old.contains(&pid), "{old:?} vs {pid}");
    assert_all_gone(&old);
    let old_roots: Vec<String> = walk
        .snapshots
        .iter()
        .filter(|s| !s.rebuilt)
        .map(|s| s.box_process.root.clone())
        .collect();
    assert_roots_removed(&old_roots);

    // Every other namespace of the box belongs to its user namespace.
    let user_ns = ns_of(pid)[5];
    let host_user = own_ns()[5];
    for (kind, ns, owner) in lsns_owners(pid) {
        let expected = match kind.as_str() {
            "user" | "cgroup" | "time" => host_user,
            _ => user_ns,
        };
        assert_eq!(owner, expected, "lsns ONS of {kind} {ns}");
    }

    // uid 0 inside is 100000 outside.
    for file in ["uid_map", "gid_map"] {
        let map = std::fs::read_to_string(format!("/proc/{pid}/{file}")).expect(file);
        assert_eq!(normalise_lines(&map), vec!["0 100000 65536"], "{file}");
    }
    assert_eq!(status_numbers(pid, "Uid"), vec![100_000; 4]);
    assert_eq!(status_numbers(pid, "Gid"), vec![100_000; 4]);
    assert_eq!(snapshot.box_process.uid, [100_000; 4]);
    // The box's files are handed to the mapped range: root inside owns them.
    for path in ["bin/busybox", "", "tmp"] {
        let owner = run_ok(
            "stat",
            &["-c", "%u %g", &format!("/proc/{pid}/root/{path}")],
        );
        assert_eq!(owner.trim(), "100000 100000", "/{path} from the host");
    }
    let inside = busybox_owner_in_box(pid);
    assert_eq!(inside.trim(), "0 0", "/bin/busybox from inside");

    // Full capabilities, counted in the box's user namespace only.
    let cap_eff = status_caps(pid, "CapEff");
    assert_ne!(cap_eff, 0, "root inside has capabilities");
    assert_eq!(
        u64::from_str_radix(&snapshot.box_process.caps.effective, 16).ok(),
        Some(cap_eff)
    );
    let joined = nsenter(
        pid,
        &[
            "-U", "-m", "-p", "-i", "-n", "-u", "-S", "0", "-G", "0", "true",
        ],
    );
    assert!(joined.status.success(), "{joined:?}");
    assert_eq!(
        nsenter_ok(pid, &["-a", "-r", "-w", "/bin/busybox", "id", "-u"]).trim(),
        "0"
    );
    // What its user namespace owns, root inside may change: a mount in
    // the box's own mount namespace (made after the user namespace).
    let source = format!("e2e-userns-{}", std::process::id());
    let mounted = sh_as_box_root(
        pid,
        &format!("mount -t tmpfs {source} /tmp && grep -c ' {source} ' /proc/self/mountinfo"),
    );
    assert!(mounted.status.success(), "{mounted:?}");
    assert_eq!(mounted.stdout.trim(), "1", "{mounted:?}");
    assert!(
        !std::fs::read_to_string("/proc/self/mountinfo")
            .expect("own mountinfo")
            .contains(&format!(" {source} ")),
        "the box's mount stays in its namespace"
    );
    // What the host's user namespace owns, it may not: a kernel sysctl.
    let sysctl = "/proc/sys/kernel/printk_ratelimit";
    let value = std::fs::read_to_string(sysctl).expect("readable");
    let write = sh_as_box_root(pid, &format!("echo {} > {sysctl}", value.trim()));
    assert!(
        !write.status.success(),
        "root inside wrote {sysctl}: {write:?}"
    );
    assert!(
        write.stderr.contains("Permission denied")
            || write.stderr.contains("Operation not permitted"),
        "{write:?}"
    );
    assert_eq!(std::fs::read_to_string(sysctl).expect("readable"), value);

    walk.end_cleanly();
}

#[test]
fn cgroupns_step_shows_the_cgroup_root_inside() {
    become_subreaper();
    let walk = HeldWalk::start("cgroupns");
    assert_separated_at(&walk, StepId::Cgroupns);
    let pid = walk.pid();
    let snapshot = walk.last().clone();
    // The user step before it kept working, and the box stayed user-first.
    assert!(snapshot.rebuild.is_some(), "the rebuild note is kept");
    assert_eq!(status_numbers(pid, "Uid"), vec![100_000; 4]);

    // Inside, with the box's own /proc: every path is the namespace's root.
    let inside = nsenter_ok(
        pid,
        &["-a", "-r", "-w", "/bin/busybox", "cat", "/proc/self/cgroup"],
    );
    let inside_paths = cgroup_paths(&inside);
    assert!(!inside_paths.is_empty(), "{inside}");
    assert!(inside_paths.iter().all(|p| p == "/"), "{inside}");
    // The host's tool in the box's cgroup namespace alone reads the same.
    let entered = nsenter_ok(pid, &["-C", "cat", "/proc/self/cgroup"]);
    assert_eq!(cgroup_paths(&entered), inside_paths);

    // From the host: the real path, where the box stands — ours.
    let host_view = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
    assert_eq!(host_view, own, "the box stands in the test's cgroups");
    let host_paths = cgroup_paths(&host_view);
    assert_eq!(host_paths.len(), inside_paths.len());
    let snapshot_paths: Vec<String> = snapshot
        .box_process
        .cgroups
        .iter()
        .map(|c| c.path.clone())
        .collect();
    let mut sorted_snapshot = snapshot_paths.clone();
    let mut sorted_host = host_paths.clone();
    sorted_snapshot.sort();
    sorted_host.sort();
    assert_eq!(
        sorted_snapshot, sorted_host,
        "snapshot vs /proc/{pid}/cgroup"
    );
    // The page's side-by-side file: the box's side reads / throughout.
    let file = proc_file(&snapshot, "/proc/self/cgroup");
    assert!(
        cgroup_paths(&file.boxed).iter().all(|p| p == "/"),
        "{file:?}"
    );
    assert_eq!(cgroup_paths(&file.host), host_paths);

    walk.end_cleanly();
}

#[test]
fn chroot_escape_works_at_chroot_and_after_every_namespace_step() {
    become_subreaper();
    for step in [
        "chroot", "uts", "pid", "mnt", "ipc", "net", "user", "cgroupns",
    ] {
        let walk = HeldWalk::start(step);
        let escape = box_escape(walk.pid());
        assert!(escape.status.success(), "{step}: {escape:?}");
        assert!(
            escape.stdout.lines().any(|l| l.starts_with("ESCAPED:")),
            "{step}: {}",
            escape.stdout
        );
        assert!(
            !escape.stdout.contains("CONTAINED"),
            "{step}: {}",
            escape.stdout
        );
        // The box itself stays where it was.
        assert_eq!(root_of(walk.pid()), walk.last().box_process.root, "{step}");
        walk.end_cleanly();
    }
}

#[test]
fn walk_to_cgroupns_leaves_nothing_behind() {
    become_subreaper();
    let data = TempData::with_rootfs("leaves-nothing");
    let text = data.text();
    let walk = HeldWalk::start_with_env("cgroupns", &[("DAMDA_DATA", &text)]);
    let pid = walk.pid();
    let live_root = walk.last().box_process.root.clone();
    let boxes = std::fs::canonicalize(&data.dir)
        .expect("the temp data dir resolves")
        .join("boxes");
    let live_dir = std::path::Path::new(&live_root)
        .parent()
        .expect("a box dir")
        .to_path_buf();
    assert_eq!(live_dir.parent(), Some(boxes.as_path()), "{live_root}");
    let live_name = live_dir
        .file_name()
        .expect("named")
        .to_string_lossy()
        .into_owned();

    // While held: one box (the lesson-order one was replaced by the
    // user-first rebuild), one ledger, nothing mounted on the host side.
    let first_pids: Vec<u32> = walk
        .snapshots
        .iter()
        .filter(|s| !s.rebuilt && s.step < StepId::User)
        .map(|s| s.pid)
        .collect();
    assert!(!first_pids.is_empty());
    assert_all_gone(&first_pids);
    assert_eq!(data.entries("boxes"), vec![live_name]);
    assert_eq!(
        data.entries("ledger").len(),
        1,
        "{:?}",
        data.entries("ledger")
    );
    assert_eq!(
        mounts_under(&data.dir),
        Vec::<String>::new(),
        "a user-first box mounts only in its own namespace"
    );
    let probes: Vec<String> = walk
        .snapshots
        .iter()
        .filter_map(|s| s.ipc_probe.as_ref())
        .map(|p| p.name.trim_start_matches('/').to_owned())
        .collect();
    let live_probe = probes.last().expect("a probe").clone();
    assert!(host_mqueues().contains(&live_probe), "{live_probe}");

    let pids: Vec<u32> = walk.snapshots.iter().map(|s| s.pid).collect();
    let walk_pid = walk.walk_pid();
    walk.end_cleanly();
    assert!(!pid_exists(walk_pid));
    assert!(!pid_exists(pid));
    assert_eq!(
        data.entries("boxes"),
        Vec::<String>::new(),
        "box directories"
    );
    assert_eq!(data.entries("ledger"), Vec::<String>::new(), "ledger files");
    assert_eq!(mounts_under(&data.dir), Vec::<String>::new(), "mounts");
    let queues = host_mqueues();
    for probe in &probes {
        assert!(!queues.contains(probe), "queue {probe} left: {queues:?}");
    }
    // What sweep --check lists is others' (tests run in parallel), never ours.
    let check = run(
        damda_bin(),
        &["sweep", "--check"],
        std::time::Duration::from_secs(20),
    );
    for line in check.stdout.lines() {
        assert!(
            !line.contains(&text) && !pids.iter().any(|p| line.contains(&format!("process {p} "))),
            "{line}"
        );
    }
}
