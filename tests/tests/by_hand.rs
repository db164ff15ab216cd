//! The commands a lesson shows, run by hand, give what the engine's step
//! gives — compared by observing both processes from outside.
//!
//! The by-hand process enters the very directory the walk's box uses (its
//! snapshot names it, and so do the commands it shows), and is killed before
//! the walk ends so the box's clean-up finds nothing holding its mounts.

use damda_e2e::*;

/// What the outside tools say about one process.
#[derive(Debug, PartialEq)]
struct Observed {
    /// Namespace types differing from the test process's own.
    separated: Vec<&'static str>,
    hostname: String,
    root: String,
}

fn observe(pid: u32) -> Observed {
    Observed {
        separated: differing(&ns_of(pid), &own_ns()),
        hostname: hostname_in(pid),
        root: root_of(pid),
    }
}

/// Waits until the by-hand process shows `expected` (its shell needs a
/// moment to unshare, chroot and set the name before it execs sleep).
fn wait_for(pid: u32, expected: &Observed) {
    poll(STEP_TIMEOUT, "the by-hand process to settle", || {
        if !pid_exists(pid) {
            return Err(format!("pid {pid} exited"));
        }
        let seen = observe(pid);
        if &seen == expected {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
}

/// Ends the by-hand process, then the walk, and checks nothing is left.
fn finish(walk: HeldWalk, by_hand: Spawned, root: Option<String>) {
    let box_pid = walk.pid();
    let hand_pid = by_hand.pid();
    drop(by_hand);
    wait_gone(hand_pid, GONE_TIMEOUT).expect("the by-hand process ends");
    let end = walk.finish();
    assert!(end.status.success(), "{}: {}", end.status, end.stderr);
    assert_all_gone(&[box_pid, hand_pid]);
    assert_roots_removed(&root.into_iter().collect::<Vec<_>>());
}

#[test]
fn uts_by_hand_matches_the_walk() {
    let walk = HeldWalk::start("uts");
    let root = walk.last().box_process.root.clone();
    assert_box_root(&root);
    let script = format!("hostname {BOX_HOSTNAME}; exec sleep 30");
    let by_hand = Spawned::start(
        "unshare",
        &["--uts", "chroot", &root, "/bin/sh", "-c", &script],
    );
    let expected = Observed {
        separated: vec!["uts"],
        hostname: BOX_HOSTNAME.to_owned(),
        root: root.clone(),
    };
    wait_for(by_hand.pid(), &expected);
    assert_eq!(observe(walk.pid()), expected, "the walk's box");
    // Two boxes, two UTS namespaces of their own.
    let hand_uts = ns_of(by_hand.pid())[0];
    let walk_uts = ns_of(walk.pid())[0];
    assert_ne!(hand_uts, walk_uts, "each unshare makes a new namespace");
    assert_eq!(walk.last().namespaces.uts.boxed, walk_uts);
    assert_ne!(own_hostname(), BOX_HOSTNAME, "the host kept its name");
    finish(walk, by_hand, Some(root));
}

#[test]
fn chroot_by_hand_matches_the_walk() {
    let walk = HeldWalk::start("chroot");
    let root = walk.last().box_process.root.clone();
    assert_box_root(&root);
    assert!(
        walk.last()
            .commands
            .iter()
            .any(|c| c.shell.starts_with(&format!("chroot {root} "))),
        "the lesson's commands name the box's root: {:?}",
        walk.last().commands
    );
    let by_hand = Spawned::start("chroot", &[&root, "/bin/sleep", "30"]);
    let expected = Observed {
        separated: vec![],
        hostname: own_hostname(),
        root: root.clone(),
    };
    wait_for(by_hand.pid(), &expected);
    assert_eq!(observe(walk.pid()), expected, "the walk's box");
    assert_eq!(
        ns_of(walk.pid()),
        ns_of(by_hand.pid()),
        "both share every namespace"
    );
    finish(walk, by_hand, Some(root));
}

#[test]
fn host_box_is_a_plain_process() {
    let walk = HeldWalk::start("host");
    let plain = Spawned::start("sleep", &["30"]);
    let expected = Observed {
        separated: vec![],
        hostname: own_hostname(),
        root: "/".to_owned(),
    };
    wait_for(plain.pid(), &expected);
    assert_eq!(observe(walk.pid()), expected, "the walk's box");
    assert_eq!(ns_of(walk.pid()), ns_of(plain.pid()));
    let snapshot = walk.last();
    assert_eq!(snapshot_box_ns(snapshot), ns_of(plain.pid()));
    assert_eq!(snapshot.box_process.root, "/");
    assert!(snapshot.syscalls.is_empty(), "{:?}", snapshot.syscalls);
    finish(walk, plain, None);
}
