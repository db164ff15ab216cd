//! The `network` step against the real kernel: what `ip`, `nft` and /proc
//! show of the bridge network a held walk builds, real traffic through it
//! (ping to the gateway, HTTP through the proxy and through DNAT, box to
//! box), and that everything goes with the box — after a clean end and
//! after SIGKILL plus `damda sweep`. Traffic goes only to loopback and to
//! the boxes' own namespaces.
//!
//! Several walks may share the bridge at once (tests run in parallel), so
//! checks name this box's own objects; the shared ones are checked gone only
//! when no box at all is left on the bridge.

use damda_e2e::*;
use damda_protocol::{NetworkView, Snapshot};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const LEASES: &str = "/run/damda/network/leases";

fn network(snapshot: &Snapshot) -> &NetworkView {
    snapshot
        .network
        .as_ref()
        .expect("a network view at the network step")
}

fn this_port(view: &NetworkView) -> (String, String, u16) {
    let port = view
        .ports
        .iter()
        .find(|p| p.this_box)
        .expect("this box on the bridge");
    (
        port.veth.clone(),
        port.box_address.clone(),
        port.host_port.expect("a forwarded port"),
    )
}

/// Starts busybox httpd in the box, serving a page with `marker`.
fn serve_in_box(pid: u32, marker: &str) {
    let script = format!("mkdir -p /srv && echo {marker} > /srv/index.html && httpd -p 80 -h /srv");
    let out = sh_as_box_root(pid, &script);
    assert!(out.status.success(), "httpd in the box: {}", out.stderr);
}

/// The walk `walk_pid`'s lease and veth are gone (its veth name may already
/// be another box's, with a lease of its own); with no box left on the
/// bridge, the bridge, the table and ip_forward's old value too. Checked
/// under the registry's lock, so no other test attaches or detaches a box
/// meanwhile.
fn assert_detached(walk_pid: u32, veth: &str) {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/damda/network/lock")
        .expect("the registry's lock file");
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).expect("flock");
    let leases: Vec<Value> = std::fs::read_dir(LEASES)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    assert!(
        !leases.iter().any(|l| l["owner_pid"] == walk_pid),
        "a lease of walk {walk_pid} is left: {leases:?}"
    );
    if Path::new("/sys/class/net").join(veth).exists() {
        assert!(
            leases.iter().any(|l| l["host_veth"] == veth),
            "{veth} is left without a lease"
        );
    }
    if leases.is_empty() {
        assert!(
            !Path::new("/sys/class/net/damda0").exists(),
            "the bridge is left"
        );
        let table = run(
            "nft",
            &["list", "table", "ip", "damda"],
            Duration::from_secs(10),
        );
        assert!(!table.status.success(), "the nft table is left");
        assert!(
            !Path::new("/run/damda/network/host-settings.json").exists(),
            "the host settings were not restored"
        );
    }
}

#[test]
fn the_bridge_network_is_what_ip_and_nft_show_and_carries_traffic() {
    let walk = HeldWalk::start("network");
    let pid = walk.pid();
    let view = network(walk.last()).clone();
    let (veth, address, host_port) = this_port(&view);
    let gateway = view.bridge.address.split('/').next().unwrap().to_owned();

    // The host side: the bridge with the gateway address, this box's end on it.
    let bridge = ip_json(&["addr", "show", "dev", "damda0"]);
    let bridge_addrs: Vec<String> = bridge[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    assert!(
        bridge_addrs.contains(&view.bridge.address),
        "{bridge_addrs:?}"
    );
    let end = ip_json(&["-d", "link", "show", "dev", &veth]);
    assert_eq!(end[0]["master"], "damda0");
    assert_eq!(end[0]["linkinfo"]["info_kind"], "veth");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );

    // Inside: eth0 with the box's address and the default route via the gateway.
    let pid_text = pid.to_string();
    let inside = ip_json_in(pid, &["addr", "show", "dev", "eth0"]);
    assert_eq!(inside[0]["addr_info"][0]["local"], address.as_str());
    assert!(inside[0]["flags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "UP"));
    let routes = nsenter_ok(pid, &["-n", "ip", "route"]);
    assert!(
        routes.contains(&format!("default via {gateway} dev eth0")),
        "{routes}"
    );
    // The page's views agree with the tools.
    assert!(view
        .routes
        .iter()
        .any(|r| r.destination == "default" && r.gateway.as_deref() == Some(gateway.as_str())));
    let eth0 = view
        .inside
        .iter()
        .find(|i| i.name == "eth0")
        .expect("eth0 on the page");
    assert!(
        eth0.addresses.iter().any(|a| a.starts_with(&address)),
        "{:?}",
        eth0.addresses
    );

    // The rules as the kernel lists them.
    let table = run_ok("nft", &["list", "table", "ip", "damda"]);
    let dnat = format!("tcp dport {host_port} dnat to {address}:80");
    assert!(table.contains(&dnat), "{dnat} missing from {table}");
    assert!(table.contains("masquerade"), "{table}");
    assert!(
        view.rules
            .as_deref()
            .is_some_and(|rules| rules.contains(&dnat)),
        "the page lists the rule"
    );

    // Real traffic: the box pings the gateway; httpd answers through the
    // proxy on 127.0.0.1 and through DNAT on the gateway address.
    let ping = sh_as_box_root(pid, &format!("ping -c 1 -W 3 {gateway}"));
    assert!(
        ping.status.success(),
        "ping the gateway: {}{}",
        ping.stdout,
        ping.stderr
    );
    serve_in_box(pid, "hello-from-the-box");
    let before = std::fs::read_to_string(format!("/proc/{pid_text}/net/dev")).unwrap();
    let via_proxy = get_page(&format!("127.0.0.1:{host_port}"));
    assert!(via_proxy.contains("hello-from-the-box"), "{via_proxy}");
    let via_dnat = get_page(&format!("{gateway}:{host_port}"));
    assert!(via_dnat.contains("hello-from-the-box"), "{via_dnat}");
    let after = std::fs::read_to_string(format!("/proc/{pid_text}/net/dev")).unwrap();
    assert_ne!(before, after, "eth0's counters moved with the traffic");
    let listening = nsenter_ok(pid, &["-n", "cat", "/proc/net/tcp", "/proc/net/tcp6"]);
    assert!(
        listening
            .lines()
            .any(|l| l.contains(":0050 ") && l.split_whitespace().nth(3) == Some("0A")),
        "httpd listens on :80: {listening}"
    );

    let walk_pid = walk.walk_pid();
    walk.end_cleanly();
    assert_detached(walk_pid, &veth);
}

#[test]
fn two_boxes_on_one_bridge_reach_each_other() {
    let first = HeldWalk::start("network");
    let second = HeldWalk::start("network");
    let (first_veth, first_address, first_port) = this_port(network(first.last()));
    let second_view = network(second.last()).clone();
    let (second_veth, second_address, second_port) = this_port(&second_view);
    assert_ne!(first_address, second_address, "two boxes, two addresses");
    assert_ne!(first_port, second_port, "two boxes, two host ports");
    assert!(
        second_view
            .ports
            .iter()
            .any(|p| p.box_address == first_address && !p.this_box),
        "the second box's view shows the first on the bridge: {:?}",
        second_view.ports
    );
    let gateway = second_view
        .bridge
        .address
        .split('/')
        .next()
        .unwrap()
        .to_owned();

    serve_in_box(first.pid(), "served-by-the-first-box");
    // Box to box directly across the bridge…
    // (busybox-static's wget crashes in glibc's static name lookup; nc does not.)
    let get = |target: &str| format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {target}");
    let direct = sh_as_box_root(second.pid(), &get(&format!("{first_address} 80")));
    assert!(
        direct.stdout.contains("served-by-the-first-box"),
        "{direct:?}"
    );
    // …and through the first box's forwarded port on the gateway (DNAT, and
    // the hairpin masquerade that brings the reply back through the host).
    let forwarded = poll(Duration::from_secs(10), "HTTP through the forward", || {
        let out = sh_as_box_root(second.pid(), &get(&format!("{gateway} {first_port}")));
        if out.stdout.contains("served-by-the-first-box") {
            Ok(out.stdout)
        } else {
            Err(format!("{out:?}"))
        }
    });
    assert!(!forwarded.is_empty());

    let first_walk = first.walk_pid();
    first.end_cleanly();
    assert_detached(first_walk, &first_veth);
    // The second box keeps its network when the first goes.
    let ping = sh_as_box_root(second.pid(), &format!("ping -c 1 -W 3 {gateway}"));
    assert!(ping.status.success(), "{ping:?}");
    let second_walk = second.walk_pid();
    second.end_cleanly();
    assert_detached(second_walk, &second_veth);
}

/// eth0's MAC inside the box `pid`.
fn box_mac(pid: u32) -> String {
    let link = ip_json_in(pid, &["link", "show", "dev", "eth0"]);
    link[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("eth0 without an address: {link:?}"))
        .to_owned()
}

/// The MAC damda gives the box at `address`: 02:da and its four bytes.
fn mac_of(address: &str) -> String {
    let octets = address.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let bytes = [0x02, 0xda, octets[0], octets[1], octets[2], octets[3]];
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What the host's neighbour table holds for `address` on the bridge.
fn neighbour(address: &str) -> Option<String> {
    let entries = ip_json(&["neigh", "show", "to", address, "dev", "damda0"]);
    entries
        .first()
        .and_then(|e| e["lladdr"].as_str())
        .map(str::to_owned)
}

/// A box that takes a freed address must answer the host at once. With a
/// random MAC it did not: the host's neighbour entry still named the old
/// box's MAC (REACHABLE for up to a minute), so the new box's first
/// connections went nowhere. The MAC follows the address, as Docker's do.
#[test]
fn a_box_on_a_freed_address_has_the_mac_the_host_knows() {
    // Keeps the bridge (and its neighbour table) while the others come and go.
    let keeper = HeldWalk::start("network");
    let first = HeldWalk::start("network");
    let (first_veth, first_address, _) = this_port(network(first.last()));
    assert_eq!(box_mac(first.pid()), mac_of(&first_address));
    serve_in_box(first.pid(), "the-first-box");
    let page = get_page(&format!("{first_address}:80"));
    assert!(page.contains("the-first-box"), "{page}");
    assert_eq!(
        neighbour(&first_address).as_deref(),
        Some(mac_of(&first_address).as_str()),
        "the host learnt the first box's MAC"
    );
    let first_walk = first.walk_pid();
    first.end_cleanly();
    assert_detached(first_walk, &first_veth);

    // The lowest free address: the first box's, unless a parallel test took it.
    let second = HeldWalk::start("network");
    let (_, second_address, _) = this_port(network(second.last()));
    assert_eq!(box_mac(second.pid()), mac_of(&second_address));
    if second_address == first_address {
        // The host's entry, learnt from the first box, is right for this one.
        assert_eq!(
            neighbour(&second_address).as_deref(),
            Some(box_mac(second.pid()).as_str())
        );
    } else {
        eprintln!(
            "the freed address {first_address} went to a parallel test's box \
             (this one has {second_address}): the reused entry was not checked"
        );
    }
    serve_in_box(second.pid(), "the-second-box");
    let page = get_page(&format!("{second_address}:80"));
    assert!(page.contains("the-second-box"), "{page}");
    second.end_cleanly();
    keeper.end_cleanly();
}

#[test]
fn a_killed_walk_leaves_a_lease_that_sweep_removes() {
    let walk = HeldWalk::start("network");
    let (veth, address, _) = this_port(network(walk.last()));
    let lease = Path::new(LEASES).join(format!("{address}.json"));
    assert!(lease.exists(), "the lease is recorded");
    let walk_pid = walk.walk_pid();
    walk.kill();
    // (Another test's attach may sweep the dead lease first; either way it
    // must be gone after the sweep.)
    let sweep = run(damda_bin(), &["sweep"], Duration::from_secs(60));
    assert!(sweep.status.success(), "{}{}", sweep.stdout, sweep.stderr);
    assert_detached(walk_pid, &veth);
    assert_no_orphaned_helpers();
}
