//! What the page draws of the network: the host side by netlink and the
//! registry, the box's side from /proc/PID/net (its network namespace, read
//! from the host without entering it). The parsers take the files' text, so
//! they are tested on fixtures.

use super::registry::Registry;
use super::{nat, sysctl, BoxNetwork, NetworkConfig, IP_FORWARD};
use crate::netlink::{LinkInfo, Netlink};
use damda_protocol::{
    BridgePort, BridgeView, Counters, HostSetting, InterfaceView, LinkState, Listener, NetworkView,
    PortForward, RouteView,
};
use procfs_core::net::{InterfaceDeviceStatus, RouteEntries, TcpNetEntries, TcpState};
use procfs_core::{ExplicitSystemInfo, FromRead, FromReadSI};

fn counters_of(link: &LinkInfo) -> Counters {
    Counters {
        rx_bytes: link.rx_bytes,
        tx_bytes: link.tx_bytes,
        rx_packets: link.rx_packets,
        tx_packets: link.tx_packets,
    }
}

/// /proc/PID/net/dev: each interface's counters, in the file's order.
pub fn parse_dev(text: &str) -> Vec<(String, Counters)> {
    let Ok(status) = InterfaceDeviceStatus::from_read(text.as_bytes()) else {
        return Vec::new();
    };
    let mut rows: Vec<(String, Counters)> = status
        .0
        .into_values()
        .map(|d| {
            let counters = Counters {
                rx_bytes: d.recv_bytes,
                tx_bytes: d.sent_bytes,
                rx_packets: d.recv_packets,
                tx_packets: d.sent_packets,
            };
            (d.name, counters)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

/// /proc/PID/net/route: the IPv4 main table.
pub fn parse_routes(text: &str) -> Vec<RouteView> {
    let Ok(entries) = RouteEntries::from_read(text.as_bytes()) else {
        return Vec::new();
    };
    entries
        .0
        .into_iter()
        .map(|r| {
            let prefix = u32::from(r.mask).count_ones();
            RouteView {
                destination: if prefix == 0 {
                    "default".into()
                } else {
                    format!("{}/{prefix}", r.destination)
                },
                gateway: (!r.gateway.is_unspecified()).then(|| r.gateway.to_string()),
                device: r.iface,
            }
        })
        .collect()
}

/// /proc/PID/net/tcp or tcp6: the listening sockets.
pub fn parse_listeners(text: &str) -> Vec<Listener> {
    let info = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    let Ok(entries) = TcpNetEntries::from_read(text.as_bytes(), &info) else {
        return Vec::new();
    };
    entries
        .0
        .into_iter()
        .filter(|e| e.state == TcpState::Listen)
        .map(|e| Listener {
            address: e.local_address.ip().to_string(),
            port: e.local_address.port(),
        })
        .collect()
}

fn read(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default()
}

/// The network of the box `box_id` (main process `pid`, attached as
/// `plan`), with `inside` its interfaces as its helper listed them. The
/// rules and foreign drop chains are read only when `full` (they change with
/// the steps, not with traffic, and cost an `nft` run each).
pub fn observe(
    config: &NetworkConfig,
    plan: &BoxNetwork,
    box_id: &str,
    pid: u32,
    inside: &[LinkState],
    full: bool,
) -> NetworkView {
    let host_links = Netlink::open()
        .and_then(|mut n| n.links())
        .unwrap_or_default();
    let link = |name: &str| host_links.iter().find(|l| l.name == name);
    let bridge = link(&plan.bridge);
    let recorded = Registry::at(&config.registry).recorded_settings();
    NetworkView {
        bridge: BridgeView {
            name: plan.bridge.clone(),
            address: format!("{}/{}", plan.gateway, plan.prefix),
            subnet: plan.subnet.clone(),
            up: bridge.is_some_and(|b| b.up),
            mac: bridge.and_then(|b| b.mac.clone()).unwrap_or_default(),
            counters: bridge.map(counters_of).unwrap_or_default(),
        },
        ports: Registry::at(&config.registry)
            .leases()
            .into_iter()
            .map(|lease| {
                let end = link(&lease.host_veth);
                BridgePort {
                    this_box: lease.box_id == box_id,
                    box_address: lease.address.to_string(),
                    host_port: Some(lease.host_port),
                    up: end.is_some_and(|l| l.up),
                    counters: end.map(counters_of).unwrap_or_default(),
                    veth: lease.host_veth,
                }
            })
            .collect(),
        inside: parse_dev(&read(pid, "dev"))
            .into_iter()
            .map(|(name, counters)| InterfaceView {
                addresses: inside
                    .iter()
                    .find(|l| l.name == name)
                    .map(|l| l.addresses.clone())
                    .unwrap_or_default(),
                name,
                counters,
            })
            .collect(),
        routes: parse_routes(&read(pid, "route")),
        listening: ["tcp", "tcp6"]
            .into_iter()
            .flat_map(|file| parse_listeners(&read(pid, file)))
            .collect(),
        forward: Some(PortForward {
            host_port: plan.host_port,
            box_address: plan.address.to_string(),
            box_port: nat::BOX_PORT,
            proxy: format!("127.0.0.1:{}", plan.host_port),
        }),
        rules: if full { nat::listing() } else { None },
        host_settings: vec![HostSetting {
            name: IP_FORWARD.into(),
            value: sysctl(IP_FORWARD).unwrap_or_default(),
            before: recorded.get(IP_FORWARD).cloned(),
        }],
        forward_drops: if full {
            nat::forward_drops()
        } else {
            Vec::new()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    1206      15    0    0    0     0          0         0      866       11    0    0    0     0       0          0
";

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0100DD0A\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t0000DD0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0
   1: 0200DD0A:0050 0100DD0A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 12346 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn device_counters_per_interface() {
        let rows = parse_dev(DEV);
        assert_eq!(rows.len(), 2);
        let (name, eth0) = &rows[0];
        assert_eq!(name, "eth0");
        assert_eq!((eth0.rx_bytes, eth0.tx_packets), (1206, 11));
    }

    #[test]
    fn default_route_via_the_gateway_and_the_link_route() {
        let routes = parse_routes(ROUTE);
        assert_eq!(
            routes,
            vec![
                RouteView {
                    destination: "default".into(),
                    gateway: Some("10.221.0.1".into()),
                    device: "eth0".into()
                },
                RouteView {
                    destination: "10.221.0.0/24".into(),
                    gateway: None,
                    device: "eth0".into()
                },
            ]
        );
    }

    #[test]
    fn only_listening_sockets_are_listed() {
        assert_eq!(
            parse_listeners(TCP),
            vec![Listener {
                address: "0.0.0.0".into(),
                port: 80
            }]
        );
        assert!(parse_listeners("garbage").is_empty());
    }
}
