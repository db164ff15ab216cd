//! `network`: the box joins a bridge network, as `docker run` does by
//! default. The host side — the bridge, the veth pair with one end moved into
//! the box's network namespace, NAT and the port forward — is done by the
//! engine between the phases (the `network` module). Late, the box
//! configures its own end: it may, since its root owns the network namespace
//! (made after the user namespace): renames it eth0, brings lo and eth0 up,
//! and adds its address and the default route via the bridge. Like Docker
//! (since 20.10), it lets its unprivileged users ping and bind ports below
//! 1024: both settings belong to the box's own network namespace, and the
//! page's terminal runs without capabilities.

use super::{BoxSpec, Phase, Step};
use crate::kernel::{Kernel, LinkOp, SysError};
use crate::network::{mac_text, nat, BoxNetwork, BRIDGE_MAC};
use damda_protocol::{NsKind, StepId};
use nix::errno::Errno;

pub struct Network;

/// What Docker sets in every container's network namespace: every group may
/// ping (here every group the box's user namespace maps: a gid it does not
/// map is EINVAL), every user may bind any port.
fn own_namespace_sysctls(spec: &BoxSpec) -> [(&'static str, String); 2] {
    [
        (
            "net.ipv4.ping_group_range",
            format!("0 {}", spec.ids.count.saturating_sub(1)),
        ),
        ("net.ipv4.ip_unprivileged_port_start", "0".into()),
    ]
}

impl Step for Network {
    fn id(&self) -> StepId {
        StepId::Network
    }

    /// The network namespace came at `net`; this step fills it.
    fn separates(&self) -> &'static [NsKind] {
        &[]
    }

    fn apply(&self, kernel: &dyn Kernel, spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        if phase == Phase::Early {
            return Ok(());
        }
        let plan = spec.network.as_ref().ok_or_else(|| {
            SysError::new(
                "network: the box is not attached to the bridge",
                Errno::ENODEV,
            )
        })?;
        for (name, value) in own_namespace_sysctls(spec) {
            kernel.sysctl(name, &value)?;
        }
        let eth0 = BoxNetwork::INSIDE_NAME.to_owned();
        for op in [
            LinkOp::Up { name: "lo".into() },
            LinkOp::Rename {
                from: plan.peer.clone(),
                to: eth0.clone(),
            },
            LinkOp::Up { name: eth0.clone() },
            LinkOp::AddAddress {
                name: eth0,
                address: plan.address,
                prefix: plan.prefix,
            },
            LinkOp::DefaultRoute {
                gateway: plan.gateway,
            },
        ] {
            kernel.link(&op)?;
        }
        Ok(())
    }

    fn commands(&self, spec: &BoxSpec, pid: u32) -> Vec<String> {
        let plan = spec.network.clone().unwrap_or_else(BoxNetwork::example);
        let mac = mac_text(plan.mac());
        let BoxNetwork {
            bridge,
            subnet,
            gateway,
            address,
            prefix,
            host_veth,
            peer,
            host_port,
        } = plan;
        let box_port = nat::BOX_PORT;
        vec![
            "# 1. the bridge (docker0's role) and its gateway address".into(),
            format!("ip route | grep -F {subnet} || echo 'subnet free'"),
            format!("ip link add {bridge} address {} type bridge   # a fixed MAC: the gateway's stays put as boxes come and go", mac_text(BRIDGE_MAC)),
            format!("ip addr add {gateway}/{prefix} dev {bridge}"),
            format!("ip link set {bridge} up"),
            "sysctl -w net.ipv4.ip_forward=1    # damda records the old value and restores it".into(),
            "# 2. a veth pair: one end on the bridge, the other into the box as eth0".into(),
            format!("ip link add {host_veth} type veth peer name {peer} address {mac}   # the MAC follows the address, as Docker's do"),
            format!("ip link set {host_veth} master {bridge} up"),
            format!("ip link set {peer} netns {pid}"),
            format!("nsenter -t {pid} -U -n ip link set {peer} name eth0"),
            format!("nsenter -t {pid} -U -n ip link set lo up"),
            format!("nsenter -t {pid} -U -n ip link set eth0 up"),
            "# 3. the box's address and default route".into(),
            format!("nsenter -t {pid} -U -n ip addr add {address}/{prefix} dev eth0"),
            format!("nsenter -t {pid} -U -n ip route add default via {gateway}"),
            format!(
                "nsenter -t {pid} -U -n sysctl -w net.ipv4.ping_group_range='{}' net.ipv4.ip_unprivileged_port_start=0",
                own_namespace_sysctls(spec)[0].1
            ),
            format!("# 4. NAT and the port forward (docker run -p {host_port}:{box_port})"),
            format!("nft add table ip {}", nat::TABLE),
            format!(
                "nft 'add chain ip {t} prerouting {{ type nat hook prerouting priority dstnat; }}'",
                t = nat::TABLE
            ),
            format!(
                "nft add rule ip {t} prerouting iifname {bridge} ip daddr {gateway} tcp dport {host_port} dnat to {address}:{box_port}",
                t = nat::TABLE
            ),
            format!(
                "nft 'add chain ip {t} postrouting {{ type nat hook postrouting priority srcnat; }}'",
                t = nat::TABLE
            ),
            format!(
                "nft add rule ip {t} postrouting ip saddr {subnet} oifname != {bridge} masquerade",
                t = nat::TABLE
            ),
            format!("iptables -t nat -A DOCKER ! -i {bridge} -p tcp --dport {host_port} -j DNAT --to-destination {address}:{box_port}   # Docker's way"),
            format!("# 127.0.0.1:{host_port} is served by damda's userland proxy (docker-proxy's role)"),
            format!("nft list table ip {}", nat::TABLE),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Call, RecordingKernel};

    #[test]
    fn host_work_early_the_box_configures_its_end_late() {
        let kernel = RecordingKernel::default();
        let mut spec = super::super::test_spec();
        Network.apply(&kernel, &spec, Phase::Early).unwrap();
        assert!(kernel.calls.borrow().is_empty());
        let unattached = Network.apply(&kernel, &spec, Phase::Late).unwrap_err();
        assert_eq!(unattached.errno, Errno::ENODEV as i32);

        spec.network = Some(BoxNetwork::example());
        Network.apply(&kernel, &spec, Phase::Late).unwrap();
        let calls = kernel.calls.borrow();
        assert_eq!(calls.len(), 7);
        assert_eq!(
            calls[0],
            Call::Sysctl("net.ipv4.ping_group_range".into(), "0 65535".into())
        );
        assert_eq!(
            calls[3],
            Call::Link(LinkOp::Rename {
                from: "damda-c2".into(),
                to: "eth0".into()
            })
        );
        assert_eq!(
            calls[6],
            Call::Link(LinkOp::DefaultRoute {
                gateway: "10.221.0.1".parse().unwrap()
            })
        );
    }

    #[test]
    fn commands_name_the_box_and_its_forward() {
        let mut spec = super::super::test_spec();
        spec.network = Some(BoxNetwork::example());
        let text = Network.commands(&spec, 4242).join("\n");
        for expected in [
            "ip link add damda0 address 02:da:4d:a0:00:01 type bridge",
            "ip link set damda-c2 netns 4242",
            "peer name damda-c2 address 02:da:0a:dd:00:02",
            "ip route add default via 10.221.0.1",
            "dnat to 10.221.0.2:80",
            "tcp dport 8081",
        ] {
            assert!(text.contains(expected), "{expected} missing");
        }
    }
}
