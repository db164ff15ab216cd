//! `__box-enter PID COMMAND`: runs one shell command inside a box, as
//! `nsenter -t PID -a` would, for the page's terminal. A fresh single-threaded
//! process (setns refuses a multi-threaded caller for some namespaces), with
//! only stdio open.
//!
//! It opens the box's namespace files and root first, joins the user
//! namespace (when the box has its own) and then the others, forks so the
//! child is in the box's PID namespace, and in the child enters the box's
//! root, drops every capability, sets no_new_privs and execs /bin/sh.

use crate::kernel::ns_flag;
use damda_protocol::NsKind;
use nix::sched::setns;
use std::fs::File;
use std::os::fd::AsFd;

pub const ENTER_ARG: &str = "__box-enter";

fn fail(what: &str, err: impl std::fmt::Display) -> ! {
    eprintln!("damda: {what}: {err}");
    std::process::exit(125);
}

/// CAP_NET_RAW: busybox's ping needs a raw socket. Docker keeps it too.
const CAP_NET_RAW: u32 = 13;

/// Drops every capability but `keep` (bit numbers), for good: the bounding
/// set, then the sets.
fn drop_capabilities(keep: &[u32]) {
    for cap in 0..=63u32 {
        if !keep.contains(&cap) {
            // SAFETY: plain prctl; EINVAL past the last capability is expected.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        }
    }
    let kept = keep.iter().fold(0u32, |mask, cap| mask | (1 << cap));
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [
        Data {
            effective: kept,
            permitted: kept,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: the v3 header with two data words, as capset(2) defines.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } < 0 {
        fail("capset", std::io::Error::last_os_error());
    }
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        fail(
            "prctl(PR_SET_NO_NEW_PRIVS)",
            std::io::Error::last_os_error(),
        );
    }
}

/// The environment variable naming the cgroup.procs files (colon-separated)
/// of the box's cgroup, for the entering process to join first.
pub const CGROUP_ENV: &str = "DAMDA_CGROUP_PROCS";

/// Joins the box's cgroup (when it has one) by writing 0 — "this process" —
/// into each of its cgroup.procs files, while the host's cgroupfs is in sight.
fn join_cgroup() {
    let Ok(files) = std::env::var(CGROUP_ENV) else {
        return;
    };
    for file in files.split(':').filter(|f| !f.is_empty()) {
        if let Err(err) = std::fs::write(file, "0") {
            fail(&format!("joining the box's cgroup ({file})"), err);
        }
    }
}

/// Host root is unmapped in the box's user namespace: become the box's root
/// (uid 0 inside), as `nsenter -S 0 -G 0` does.
fn become_box_root() {
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    if let Err(errno) = nix::unistd::setgroups(&[])
        .and_then(|()| nix::unistd::setresgid(root_gid, root_gid, root_gid))
        .and_then(|()| nix::unistd::setresuid(root_uid, root_uid, root_uid))
    {
        fail("becoming the box's root", errno);
    }
}

/// Joins the box's namespaces and forks; returns in the child, which is in
/// the box's PID namespace, with the box's root open and whether a user
/// namespace was joined. The parent waits and exits with the child.
fn join(pid: &str) -> (File, bool) {
    let pid: u32 = pid.parse().unwrap_or_else(|e| fail("pid", e));
    let open = |path: String| File::open(&path).unwrap_or_else(|e| fail(&path, e));
    let mut joins = Vec::new();
    for kind in NsKind::ALL {
        let name = kind.proc_name();
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{name}"));
        let ours = std::fs::read_link(format!("/proc/self/ns/{name}"));
        if theirs.is_ok() && theirs.ok() != ours.ok() {
            joins.push((kind, open(format!("/proc/{pid}/ns/{name}"))));
        }
    }
    let root = open(format!("/proc/{pid}/root"));
    // The user namespace first: it grants the rights to join the others.
    joins.sort_by_key(|(kind, _)| *kind != NsKind::User);
    for (kind, file) in &joins {
        if let Err(errno) = setns(file.as_fd(), ns_flag(*kind).0) {
            fail(&format!("setns({})", kind.proc_name()), errno);
        }
    }
    // SAFETY: single-threaded; the child goes on alone.
    match unsafe { nix::unistd::fork() } {
        Err(errno) => fail("fork", errno),
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // Ctrl-C reaches the whole group; only the command should die of it.
            // SAFETY: setting a signal disposition.
            unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
            super::child::wait_and_exit(child)
        }
        Ok(nix::unistd::ForkResult::Child) => {}
    }
    // SAFETY: plain prctl: the command dies with the process that forked it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let joined_user = joins.iter().any(|(kind, _)| *kind == NsKind::User);
    (root, joined_user)
}

/// Enters the box's root as its own: fchdir to the opened root, chroot(".").
fn enter_root(root: File) {
    if let Err(errno) = nix::unistd::fchdir(root.as_fd()) {
        fail("fchdir(box root)", errno);
    }
    if let Err(errno) = nix::unistd::chroot(".") {
        fail("chroot", errno);
    }
    if let Err(errno) = nix::unistd::chdir("/") {
        fail("chdir", errno);
    }
}

/// Runs `command` with /bin/sh inside the box, as its root without
/// capabilities — but CAP_NET_RAW once the box has a user namespace of its
/// own, where it reaches only the box's own network namespace (ping).
pub fn run(pid: &str, command: &str) -> ! {
    super::child::name_process("damda-enter");
    join_cgroup();
    let (root, joined_user) = join(pid);
    if joined_user {
        become_box_root();
    }
    enter_root(root);
    drop_capabilities(if joined_user { &[CAP_NET_RAW] } else { &[] });
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .env_clear()
            .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
            .env("HOME", "/root")
            .env("TERM", "dumb"),
    );
    fail("exec /bin/sh", err)
}

pub const DEMO_ARG: &str = "__box-demo";

/// Runs a cgroup demonstration's workload inside the box, in its cgroup,
/// as its root without capabilities. The bound the workload checks is read
/// before entering, where the host's cgroupfs is visible.
pub fn demo(pid: &str, workload: &[String]) -> ! {
    super::child::name_process("damda-demo");
    let Some(workload) = crate::cgroups::demo::Workload::parse(workload) else {
        fail("demo", "unknown workload");
    };
    join_cgroup();
    let bound = workload.bound();
    let (root, joined_user) = join(pid);
    if joined_user {
        become_box_root();
    }
    enter_root(root);
    drop_capabilities(&[]);
    std::process::exit(workload.run_within(bound))
}

pub const ESCAPE_ARG: &str = "__box-escape";

/// (device, inode) of a directory: two paths are the same directory when
/// these are equal.
fn identity(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn first_entries(path: &str) -> String {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.truncate(12);
    names.join(" ")
}

/// The chroot escape, done for real by a root process inside the box with
/// the box's capabilities: chroot into a subdirectory while the working
/// directory stays outside it, climb with "..", and chroot there.
pub fn escape(pid: &str) -> ! {
    super::child::name_process("damda-escape");
    let host_root = identity("/");
    let (root, _) = join(pid);
    enter_root(root);
    println!("$ ls /            # inside the box\n{}", first_entries("/"));
    let step = |what: &str, result: nix::Result<()>| match result {
        Ok(()) => println!("{what} = 0"),
        Err(errno) => {
            println!("{what} = -1 {errno:?} ({})", errno.desc());
            std::process::exit(1);
        }
    };
    step(
        "chroot(\"tmp\")    # cwd stays outside the new root",
        nix::unistd::chroot("tmp"),
    );
    for _ in 0..64 {
        let _ = nix::unistd::chdir("..");
    }
    println!("chdir(\"..\") × 64");
    step("chroot(\".\")", nix::unistd::chroot("."));
    println!(
        "$ ls /            # after the escape\n{}",
        first_entries("/")
    );
    if identity("/").is_some() && identity("/") == host_root {
        println!("ESCAPED: / is now the host's root directory.");
        println!("탈출 성공: 이제 / 는 호스트의 루트 디렉터리입니다.");
    } else {
        println!("CONTAINED: / is still not the host's root.");
        println!("탈출 실패: / 는 여전히 호스트의 루트가 아닙니다.");
    }
    std::process::exit(0)
}
