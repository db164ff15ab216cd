//! The cgroup engine's checks on a cgroup2-only system: boots Debian's
//! kernel (data/vm, from scripts/setup.sh) under qemu with
//! `cgroup_no_v1=all` and an initramfs holding busybox and the
//! `cgroup-selftest` binary, which /init runs from a non-root group. The
//! checks are the same as `cgroups_host.rs` runs on this host. Also checks
//! that a hung guest is killed and retried. Needs qemu and the kernel; root
//! is not needed to boot the VM.

use damda::paths::Paths;
use damda::vm::{self, Initramfs, VmConfig};
use std::path::Path;
use std::time::Instant;

#[test]
fn cgroup_checks_pass_on_a_cgroup2_only_kernel() {
    let started = Instant::now();
    let kernel = vm::kernel(&Paths::from_env().vm()).unwrap_or_else(|e| panic!("{e}"));
    let mut initramfs = Initramfs::new();
    initramfs
        .busybox(Path::new("/bin/busybox"))
        .expect("Debian's busybox-static at /bin/busybox (scripts/setup.sh installs it)");
    initramfs
        .binary(
            Path::new(env!("CARGO_BIN_EXE_cgroup-selftest")),
            "/bin/cgroup-selftest",
        )
        .unwrap();
    initramfs.init(&vm::init_script("/bin/cgroup-selftest"));
    let built = started.elapsed();

    let run = vm::run(&VmConfig::cgroup_v2(kernel), &initramfs).unwrap_or_else(|e| panic!("{e}"));
    let console = run.lines.join("\n");
    eprintln!("{console}");
    eprintln!(
        "initramfs built in {built:?}; boot to /init {:?}, whole run {:?}, attempts {}",
        run.boot, run.total, run.attempts
    );

    // The guest had cgroup2 alone, and the checks ran from a child group.
    assert!(
        console.contains("DAMDA-VM v1 hierarchies: 0"),
        "a v1 hierarchy was mounted:\n{console}"
    );
    assert!(
        console.contains("DAMDA-VM running in 0::/test"),
        "not run from /test:\n{console}"
    );
    let layout = run
        .lines
        .iter()
        .find(|l| l.contains("DAMDA-SELFTEST ok layout:"))
        .unwrap_or_else(|| panic!("no layout line:\n{console}"));
    assert!(
        layout.contains("cgroup v2 at /sys/fs/cgroup (uses cgroup v2)"),
        "{layout}"
    );
    for check in [
        "limits_applied",
        "fork_bomb_bounded",
        "memory_hog_oom_killed",
        "cpu_throttled",
        "ledger_cleans_up",
        "restore_placement",
        "nothing_left",
    ] {
        assert!(
            console.contains(&format!("DAMDA-SELFTEST ok {check}:")),
            "{check} did not pass:\n{console}"
        );
    }
    assert!(!console.contains("DAMDA-SELFTEST FAILED"), "{console}");
    assert_eq!(run.result, 0, "{console}");
}

/// A guest that never reaches /init's first line is killed at the boot
/// deadline and tried once more; no qemu outlives the call.
#[test]
fn a_hung_guest_is_killed_and_retried() {
    let kernel = vm::kernel(&Paths::from_env().vm()).unwrap_or_else(|e| panic!("{e}"));
    let mut initramfs = Initramfs::new();
    initramfs
        .busybox(Path::new("/bin/busybox"))
        .expect("Debian's busybox-static at /bin/busybox");
    // Never prints the INIT mark: looks like a hang to the harness.
    initramfs.init("#!/bin/sh\nexec sleep 600\n");
    let mut config = VmConfig::cgroup_v2(kernel);
    config.boot_timeout = std::time::Duration::from_secs(2);
    config.cmdline.push_str(" damda.test=hung");
    let started = Instant::now();
    let err = vm::run(&config, &initramfs).unwrap_err();
    let spent = started.elapsed();
    assert!(
        matches!(err, vm::VmError::Timeout { attempts: 2, .. }),
        "{err}"
    );
    assert!(spent < std::time::Duration::from_secs(15), "{spent:?}");
    // The other test's qemu may run meanwhile: look for this one's mark.
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains("damda.test=hung"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
