//! `cgroup-selftest`: the cgroup engine's privileged checks as one program,
//! for a machine without cargo — the cgroup2-only VM that
//! `backend/tests/cgroups_v2_vm.rs` boots runs it as its test. Prints one
//! `DAMDA-SELFTEST ok|FAILED NAME: …` line per check and exits 0 only when
//! all passed. With `__cgroup-demo WORKLOAD ARG` it runs one of the demos'
//! workloads instead (the checks start those from this same binary).

use damda::cgroups::demo::{Workload, DEMO_ARG};
use damda::cgroups::selftest;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(DEMO_ARG) {
        let code = match Workload::parse(&args[1..]) {
            Some(workload) => workload.run(),
            None => {
                eprintln!("cgroup-selftest: unknown workload {:?}", &args[1..]);
                2
            }
        };
        std::process::exit(code);
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("cgroup-selftest: needs root (it creates cgroups)");
        std::process::exit(2);
    }
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let passed = selftest::run_all(&exe);
    std::process::exit(if passed { 0 } else { 1 });
}
