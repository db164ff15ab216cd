//! Random sequences of next, back and goto end in the same observable state
//! as walking straight to the same step, and leave nothing behind. Needs root
//! (real namespaces).

use damda::engine::{BoxSession, Engine, EngineConfig};
use damda::ledger::Ledger;
use damda::paths::Paths;
use damda_protocol::{NsKind, Snapshot, StepId};
use std::sync::Arc;

/// What must not depend on how the box got to its step: everything but pids,
/// inode numbers and counts of host processes.
fn essence(snapshot: &Snapshot) -> String {
    let separate: Vec<&str> = NsKind::ALL
        .iter()
        .filter(|kind| !snapshot.namespaces.get(**kind).is_shared())
        .map(|kind| kind.proc_name())
        .collect();
    let process = &snapshot.box_process;
    let links: Vec<String> = snapshot
        .links
        .iter()
        .map(|l| format!("{}:{}", l.name, l.up))
        .collect();
    let isolated_ps = snapshot.namespaces.mnt.is_shared().then_some(0);
    format!(
        "step={} separate={separate:?} hostname={} uid={:?} gid={:?} pid_depth={} root_is_box={} links={links:?} ipc_in_box={:?} rebuilt_user_first={} ps={:?}",
        snapshot.step,
        process.hostname,
        process.uid,
        process.gid,
        process.nspid.len(),
        process.root.ends_with("/root"),
        snapshot.ipc_probe.as_ref().map(|p| p.in_box),
        snapshot.rebuild.is_some(),
        isolated_ps.unwrap_or(snapshot.tree.box_total),
    )
}

/// Whether `pid` is gone (or a zombie awaiting its reaper) within `seconds`.
fn gone_within(pid: u32, seconds: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if matches!(state, None | Some("Z")) {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A small deterministic generator, so a failure can be replayed by seed.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn random_moves_match_a_straight_walk() {
    let dir = std::env::temp_dir().join(format!("damda-property-{}", std::process::id()));
    let paths = Paths::from_env();
    let ledger = Arc::new(Ledger::create(&dir).unwrap());
    let mut config = EngineConfig::defaults(&paths);
    config.helper_binary = env!("CARGO_BIN_EXE_damda").into();
    let engine = Arc::new(Engine::new(ledger.clone(), config).unwrap());
    let steps: Vec<StepId> = damda::steps::ORDER.iter().map(|s| s.id()).collect();
    let mut seen_pids = Vec::new();
    for seed in [7u64, 1234, 99991, 424242, 31337] {
        let mut rng = XorShift(seed);
        let (mut session, _) = BoxSession::start(engine.clone()).unwrap();
        let mut last = None;
        for _ in 0..6 {
            let outcome = match rng.below(3) {
                0 => session.step_forward(),
                1 => session.back(),
                _ => session.goto(steps[rng.below(steps.len())]),
            };
            match outcome {
                Ok(snapshots) => last = snapshots.last().cloned().or(last),
                // At an end of the order: refused, and the box is unchanged.
                Err(damda::engine::EngineError::NoSuchMove(_)) => {}
                Err(err) => panic!("seed {seed}: {err}"),
            }
            seen_pids.push(session.pid());
        }
        let Some(wandered) = last else { continue };
        let (mut straight, _) = BoxSession::start(engine.clone()).unwrap();
        let direct = if wandered.step == StepId::Host {
            straight.snapshot().unwrap()
        } else {
            straight.goto(wandered.step).unwrap().pop().unwrap()
        };
        seen_pids.push(straight.pid());
        assert_eq!(essence(&wandered), essence(&direct), "seed {seed}");
    }
    assert!(
        ledger.recorded().is_empty(),
        "objects still recorded after every box was dropped: {:?}",
        ledger.recorded()
    );
    for pid in seen_pids {
        assert!(gone_within(pid, 5), "box process {pid} outlived its box");
    }
    ledger.close();
    let _ = std::fs::remove_dir_all(&dir);
}
