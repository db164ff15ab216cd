//! The `network` step's commands, as the page shows them, run by hand with
//! `ip` and `nft` against a process in a user and network namespace of its
//! own (`unshare --user --map-root-user --net`), with names and a subnet of
//! their own; then the kernel's view of both compared.

use damda_e2e::*;
use serde_json::Value;
use std::time::Duration;

/// What was made by hand; removed on drop, a failing test included.
struct ByHand {
    sleeper: Spawned,
    bridge: String,
    host_end: String,
    table: String,
}

impl Drop for ByHand {
    fn drop(&mut self) {
        for link in [&self.host_end, &self.bridge] {
            let _ = run("ip", &["link", "del", link], Duration::from_secs(10));
        }
        let _ = run(
            "nft",
            &["delete", "table", "ip", &self.table],
            Duration::from_secs(10),
        );
    }
}

/// eth0's address/prefix and the routes, as `ip` shows them inside `pid`.
fn inside(pid: u32) -> (Vec<String>, String) {
    let addrs = ip_json_in(pid, &["-4", "addr", "show", "dev", "eth0"]);
    let addresses = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    (addresses, nsenter_ok(pid, &["-n", "ip", "route"]))
}

#[test]
fn the_commands_on_the_page_build_the_same_network_by_hand() {
    let walk = HeldWalk::start("network");
    let snapshot = walk.last().clone();
    let view = snapshot.network.clone().expect("a network view");
    let port = view.ports.iter().find(|p| p.this_box).unwrap().clone();
    let number = port.veth.trim_start_matches("damda-h").to_owned();

    let tag = format!("{:04x}", std::process::id() % 0x10000);
    let third = std::process::id() % 200 + 20;
    let by_hand = ByHand {
        sleeper: Spawned::start("unshare", &["--user", "--net", "sleep", "120"]),
        bridge: format!("damdabh{tag}"),
        host_end: format!("damdabh{tag}h"),
        table: format!("damdabh{tag}"),
    };
    let sleeper = by_hand.sleeper.pid();
    poll(Duration::from_secs(5), "the by-hand namespace", || {
        if ns_of(sleeper)[4] != own_ns()[4] {
            Ok(())
        } else {
            Err("not yet unshared".into())
        }
    });
    // The box's mapping: root inside is 100000 outside, 65536 ids.
    for map in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{sleeper}/{map}"), "0 100000 65536\n").unwrap();
    }
    let rename = |line: &str| {
        line.replace(&format!("damda-h{number}"), &by_hand.host_end)
            .replace(&format!("damda-c{number}"), &format!("damdabh{tag}c"))
            .replace("damda0", &by_hand.bridge)
            .replace("ip damda ", &format!("ip {} ", by_hand.table))
            .replace("ip damda'", &format!("ip {}'", by_hand.table))
            .replace("table ip damda", &format!("table ip {}", by_hand.table))
            .replace("10.221.0.", &format!("10.222.{third}."))
            .replace(&format!("-t {} ", snapshot.pid), &format!("-t {sleeper} "))
            .replace(
                &format!("netns {}", snapshot.pid),
                &format!("netns {sleeper}"),
            )
    };
    let mut ran = 0;
    for command in &snapshot.commands {
        let line = command.shell.trim();
        // Comments, the host-wide sysctl (already set while the walk holds
        // its box), Docker's iptables form and the closing listing are not
        // steps to redo.
        if line.starts_with('#')
            || line.starts_with("sysctl")
            || line.starts_with("iptables")
            || line.starts_with("nft list")
        {
            continue;
        }
        let line = rename(line);
        let out = run("sh", &["-c", &line], Duration::from_secs(20));
        assert!(out.status.success(), "{line}: {}{}", out.stdout, out.stderr);
        ran += 1;
    }
    assert!(ran >= 12, "only {ran} commands ran");

    // The kernel shows the same network, names and subnet aside.
    let (engine_addrs, engine_routes) = inside(walk.pid());
    let (hand_addrs, hand_routes) = inside(sleeper);
    let engine_addrs: Vec<String> = engine_addrs.iter().map(|a| rename(a)).collect();
    assert_eq!(engine_addrs, hand_addrs);
    let normalise = |routes: &str| {
        let mut lines: Vec<String> = routes
            .lines()
            .map(|l| {
                rename(l)
                    .split_whitespace()
                    .filter(|w| *w != "proto" && *w != "kernel")
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(normalise(&engine_routes), normalise(&hand_routes));
    let master =
        |link: &str| -> Value { ip_json(&["link", "show", "dev", link])[0]["master"].clone() };
    assert_eq!(master(&port.veth), "damda0");
    assert_eq!(master(&by_hand.host_end), by_hand.bridge.as_str());
    let engine_table = run_ok("nft", &["list", "table", "ip", "damda"]);
    let hand_table = run_ok("nft", &["list", "table", "ip", &by_hand.table]);
    let dnat =
        |address: &str| format!("tcp dport {} dnat to {address}:80", port.host_port.unwrap());
    assert!(
        engine_table.contains(&dnat(&port.box_address)),
        "{engine_table}"
    );
    assert!(
        hand_table.contains(&dnat(&rename(&port.box_address))),
        "{hand_table}"
    );
    drop(by_hand);
    walk.end_cleanly();
}
