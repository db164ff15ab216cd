//! The namespace steps redone by hand with `unshare`, `nsenter` and a write
//! to uid_map, compared with a held walk by what the outside tools observe
//! of both processes (never by the strings the tools print about
//! themselves).
//!
//! The by-hand runs chroot into a copy of the rootfs in a data directory of
//! their own, and every process they start is killed when the test ends,
//! a failing one included ([`SpawnedTree`]).

use damda_e2e::*;
use damda_protocol::NsKind;

/// What the outside tools say about a box's main process at `net`.
#[derive(Debug, PartialEq)]
struct Observed {
    /// Namespace types differing from the test process's own.
    separated: Vec<&'static str>,
    /// The NSpid line: how many PID namespaces, and the innermost pid.
    nspid_depth: usize,
    nspid_inner: u64,
    hostname: String,
    /// `nsenter -n ip -o link`: name and state of each link.
    links: Vec<(String, String)>,
    /// `nsenter -n ip -o addr` and `ip route` lines.
    addresses: Vec<String>,
    routes: Vec<String>,
    /// `nsenter -i ipcs -q`: the System V queues the box sees.
    sysv_queues: Vec<u32>,
    /// The pids the box's own /proc lists, less the reader's.
    box_pids: Vec<u32>,
    /// Whether its /proc is a proc mount of its own (not the host's).
    own_proc: bool,
}

fn observe(pid: u32) -> Observed {
    let nspid = status_numbers(pid, "NSpid");
    let links = normalise_lines(&nsenter_ok(pid, &["-n", "ip", "-o", "link"]))
        .iter()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields
                .get(1)
                .map(|n| n.trim_end_matches(':').to_owned())
                .unwrap_or_default();
            let state = fields
                .iter()
                .position(|f| *f == "state")
                .and_then(|i| fields.get(i + 1))
                .map(|s| (*s).to_owned())
                .unwrap_or_default();
            (name, state)
        })
        .collect();
    let script = r#"echo $$; for p in /proc/[0-9]*; do echo "${p#/proc/}"; done"#;
    let listing = nsenter_ok(pid, &["-a", "-r", "-w", "/bin/busybox", "sh", "-c", script]);
    let mut numbers = listing.lines().filter_map(|l| l.trim().parse::<u32>().ok());
    let reader = numbers.next().expect("the reader's pid");
    let mut box_pids: Vec<u32> = numbers.filter(|p| *p != reader).collect();
    box_pids.sort_unstable();
    let host_proc = mountinfo_of(std::process::id())
        .into_iter()
        .rfind(|m| m.point == "/proc")
        .expect("the host's /proc")
        .dev;
    let table = mountinfo_of(pid);
    let procs: Vec<&MountLine> = table.iter().filter(|m| m.point == "/proc").collect();
    let own_proc = procs
        .iter()
        .find(|m| !procs.iter().any(|other| other.parent == m.id))
        .is_some_and(|top| top.fstype == "proc" && top.dev != host_proc);
    Observed {
        separated: differing(&ns_of(pid), &own_ns()),
        nspid_depth: nspid.len(),
        nspid_inner: *nspid.last().expect("an NSpid"),
        hostname: hostname_in(pid),
        links,
        addresses: normalise_lines(&nsenter_ok(pid, &["-n", "ip", "-o", "addr"])),
        routes: normalise_lines(&nsenter_ok(pid, &["-n", "ip", "route"])),
        sysv_queues: sysv_queue_ids(&nsenter_ok(pid, &["-i", "ipcs", "-q"])),
        box_pids,
        own_proc,
    }
}

#[test]
fn net_by_hand_matches_the_walk() {
    become_subreaper();
    // Declared first, dropped last: the queue and the directory outlive the
    // by-hand processes.
    let queue = SysvQueue::create();
    let data = TempData::with_rootfs("by-hand-net");
    let root = data.rootfs().to_string_lossy().into_owned();
    let walk = HeldWalk::start("net");

    let script = format!("hostname {BOX_HOSTNAME} && mount -t proc proc /proc && exec sleep 60");
    let by_hand = SpawnedTree::start(
        "unshare",
        &[
            "--uts",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--ipc",
            "--net",
            "chroot",
            &root,
            "/bin/sh",
            "-c",
            &script,
        ],
    );
    let hand = by_hand.forked("sleep");
    assert_eq!(root_of(hand), root, "the by-hand box is in its own copy");

    let seen = observe(hand);
    let expected = Observed {
        separated: vec!["uts", "pid", "mnt", "ipc", "net"],
        nspid_depth: 2,
        nspid_inner: 1,
        hostname: BOX_HOSTNAME.to_owned(),
        links: vec![("lo".to_owned(), "DOWN".to_owned())],
        addresses: vec![],
        routes: vec![],
        sysv_queues: vec![],
        box_pids: vec![1],
        own_proc: true,
    };
    assert_eq!(seen, expected, "by hand");
    assert_eq!(observe(walk.pid()), expected, "the walk's box");
    assert_eq!(separated_at(walk.last().step), expected.separated);
    assert!(
        queue.on_host(),
        "the host's queue {} is still there",
        queue.id
    );

    // Two boxes, each with namespaces of its own.
    let (hand_ns, walk_ns) = (ns_of(hand), ns_of(walk.pid()));
    for (i, kind) in NsKind::ALL.iter().enumerate() {
        if expected.separated.contains(&kind.proc_name()) {
            assert_ne!(hand_ns[i], walk_ns[i], "{}", kind.proc_name());
        } else {
            assert_eq!(hand_ns[i], walk_ns[i], "{}", kind.proc_name());
        }
    }

    drop(by_hand);
    assert_all_gone(&[hand]);
    walk.end_cleanly();
    assert_eq!(mounts_under(&data.dir), Vec::<String>::new());
    drop(data);
    drop(queue);
}

/// What the outside tools say about a process's user namespace.
#[derive(Debug, PartialEq)]
struct UserObserved {
    uid_map: Vec<String>,
    gid_map: Vec<String>,
    setgroups: Vec<String>,
    uid: Vec<u64>,
    gid: Vec<u64>,
    cap_eff: u64,
}

fn observe_user(pid: u32) -> UserObserved {
    let read = |file: &str| {
        normalise_lines(
            &std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                .unwrap_or_else(|e| panic!("/proc/{pid}/{file}: {e}")),
        )
    };
    UserObserved {
        uid_map: read("uid_map"),
        gid_map: read("gid_map"),
        setgroups: read("setgroups"),
        uid: status_numbers(pid, "Uid"),
        gid: status_numbers(pid, "Gid"),
        cap_eff: status_caps(pid, "CapEff"),
    }
}

/// The owner of `path` as the host's `stat` reports it.
fn owner(path: &str) -> String {
    run_ok("stat", &["-c", "%u %g", path]).trim().to_owned()
}

#[test]
fn user_by_hand_matches_the_walk() {
    become_subreaper();
    let data = TempData::with_rootfs("by-hand-user");
    let root = data.rootfs().to_string_lossy().into_owned();
    let walk = HeldWalk::start("user");
    let box_pid = walk.pid();

    // unshare -U: a new user namespace, no maps yet.
    let holder = SpawnedTree::start("unshare", &["--user", "sleep", "60"]);
    let holder_pid = holder.pid();
    poll(STEP_TIMEOUT, "unshare -U to exec sleep", || {
        match (comm_of(holder_pid), ns_of(holder_pid)[5] != own_ns()[5]) {
            (Some(comm), true) if comm == "sleep" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // The maps, written from outside as the engine writes them.
    let line = "0 100000 65536\n";
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{holder_pid}/{file}"), line)
            .unwrap_or_else(|e| panic!("writing {file}: {e}"));
    }
    // The maps alone change no process's ids: the holder is still host
    // root, unmapped inside (nobody), and its exec dropped its capabilities.
    let holder_seen = observe_user(holder_pid);
    assert_eq!(holder_seen.uid, vec![0; 4]);
    assert_eq!(holder_seen.cap_eff, 0);
    // Becoming root inside: join the namespace and set the ids to 0 there.
    let holder_text = holder_pid.to_string();
    let root_inside = SpawnedTree::start(
        "nsenter",
        &[
            "-t",
            &holder_text,
            "-U",
            "-S",
            "0",
            "-G",
            "0",
            "sleep",
            "60",
        ],
    );
    let inside_pid = root_inside.pid();
    poll(STEP_TIMEOUT, "nsenter -U to exec sleep", || {
        match (
            comm_of(inside_pid),
            ns_of(inside_pid)[5] == ns_of(holder_pid)[5],
        ) {
            (Some(comm), true) if comm == "sleep" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    let walk_seen = observe_user(box_pid);
    let hand_seen = observe_user(inside_pid);
    assert_eq!(hand_seen, walk_seen, "by hand vs the walk's box");
    assert_eq!(walk_seen.uid_map, vec!["0 100000 65536"]);
    assert_eq!(walk_seen.uid, vec![100_000; 4]);
    assert_ne!(walk_seen.cap_eff, 0);
    assert_eq!(holder_seen.uid_map, walk_seen.uid_map);
    assert_eq!(holder_seen.gid_map, walk_seen.gid_map);
    assert_ne!(
        ns_of(inside_pid)[5],
        ns_of(box_pid)[5],
        "two user namespaces"
    );

    // The rootfs handed to the mapped range by hand, as the engine does:
    // 100000 outside, root inside.
    run_ok("chown", &["-hR", "100000:100000", &root]);
    let busybox = format!("{root}/bin/busybox");
    let box_busybox = format!("/proc/{box_pid}/root/bin/busybox");
    assert_eq!(owner(&busybox), owner(&box_busybox));
    assert_eq!(owner(&busybox), "100000 100000");
    // Seen from inside each user namespace: root's. (The box's root is
    // reached by nsenter -r, opened before joining: a process inside may not
    // open /proc/PID/root of the box, which is not dumpable.)
    let inside_by_hand = nsenter_ok(inside_pid, &["-U", "stat", "-c", "%u %g", &busybox]);
    let inside_box = busybox_owner_in_box(box_pid);
    assert_eq!(inside_by_hand.trim(), "0 0");
    assert_eq!(inside_box.trim(), inside_by_hand.trim());

    drop(root_inside);
    drop(holder);
    assert_all_gone(&[inside_pid, holder_pid]);
    walk.end_cleanly();
    drop(data);
}

#[test]
fn cgroupns_by_hand_matches_the_walk() {
    become_subreaper();
    let walk = HeldWalk::start("cgroupns");
    let by_hand = run(
        "unshare",
        &["--cgroup", "cat", "/proc/self/cgroup"],
        std::time::Duration::from_secs(20),
    );
    assert!(by_hand.status.success(), "{by_hand:?}");
    let in_box = nsenter_ok(walk.pid(), &["-C", "cat", "/proc/self/cgroup"]);
    let paths = cgroup_paths(&by_hand.stdout);
    assert!(
        !paths.is_empty() && paths.iter().all(|p| p == "/"),
        "{paths:?}"
    );
    assert_eq!(
        cgroup_paths(&in_box),
        paths,
        "the walk's box reads the same"
    );
    // From the host, both stand where we stand.
    let own = std::fs::read_to_string("/proc/self/cgroup").expect("own cgroup");
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{}/cgroup", walk.pid())).expect("box cgroup"),
        own
    );
    walk.end_cleanly();
}
