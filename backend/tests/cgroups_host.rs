//! The cgroup engine's privileged checks on this host (cgroup v1, or
//! whatever the machine has): limits read back from cgroupfs, the fork bomb
//! stopped by pids.max, the memory hog OOM-killed, the CPU burner throttled,
//! the ledger's cleanup. The same checks run inside a cgroup2-only VM in
//! `cgroups_v2_vm.rs`. Needs root.

use damda::cgroups::selftest;
use std::path::Path;
use std::sync::Mutex;

/// The checks one at a time: on v2 they share the server leaf, and the
/// placement restore must see no other group beside it.
static SERIAL: Mutex<()> = Mutex::new(());

fn run(check: selftest::Check) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        nix::unistd::geteuid().is_root(),
        "the cgroup checks need root: run them with sudo"
    );
    let exe = Path::new(env!("CARGO_BIN_EXE_cgroup-selftest"));
    match check(exe) {
        Ok(summary) => eprintln!("{summary}"),
        Err(err) => panic!("{err:#}"),
    }
    let left = selftest::leftovers(Path::new("/sys/fs/cgroup"));
    let own: Vec<_> = left
        .iter()
        .filter(|p| {
            p.to_string_lossy()
                .contains(&format!("damda-selftest-{}-", std::process::id()))
        })
        .collect();
    assert!(own.is_empty(), "left behind: {own:?}");
}

#[test]
fn layout_is_detected() {
    run(selftest::check_layout);
}

#[test]
fn bad_limits_are_rejected_before_any_mkdir() {
    run(selftest::check_bad_limits);
}

#[test]
fn limits_are_applied_and_read_back() {
    run(selftest::check_limits_applied);
}

#[test]
fn fork_bomb_stops_at_pids_max() {
    run(selftest::check_fork_bomb);
}

#[test]
fn memory_hog_is_oom_killed() {
    run(selftest::check_memory_oom);
}

#[test]
fn cpu_burner_is_throttled() {
    run(selftest::check_cpu_throttled);
}

#[test]
fn ledger_kills_and_removes_a_group() {
    run(selftest::check_ledger_cleanup);
}
