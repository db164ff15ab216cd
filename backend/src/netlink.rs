//! A small synchronous rtnetlink client: links, addresses and routes.
//!
//! Synchronous and thread-free on purpose: it is called from the server's
//! blocking engine code and from the box helper, a process that lives in the
//! box's network namespace and must stay single-threaded (unshare and setns
//! of a user or mount namespace refuse a multi-threaded caller). So this is a
//! plain NETLINK_ROUTE socket, one request at a time, the answer read back
//! before the call returns.
//!
//! The socket belongs to the network namespace its creator was in when
//! [`Netlink::open`] ran; every request acts on that namespace, wherever the
//! caller moves afterwards.

use std::io;
use std::net::Ipv4Addr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_DUMP_INTR, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as IflaInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

/// What went wrong, and in which request (`op`, e.g. "RTM_NEWLINK veth
/// damda-h3"), with the errno so that callers can show its name.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel answered the request with an error.
    #[error("{op}: {errno}")]
    Kernel { op: String, errno: Errno },
    /// The socket itself failed: creating, binding, sending or receiving.
    #[error("{op}: socket: {errno}")]
    Socket { op: String, errno: Errno },
    /// A reply did not parse.
    #[error("{op}: malformed reply: {detail}")]
    Decode { op: String, detail: String },
}

/// One network interface, as RTM_GETLINK reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND: "bridge", "veth", "dummy"…; None for plain devices
    /// such as `lo` or a physical NIC.
    pub kind: Option<String>,
    /// IFLA_MASTER: the bridge this link is a port of.
    pub master: Option<u32>,
    /// IFF_UP: administratively up (`ip link set up`).
    pub up: bool,
    /// IFLA_OPERSTATE as `ip` prints it: "UP", "DOWN", "UNKNOWN",
    /// "LOWERLAYERDOWN"…
    pub oper_state: String,
    /// IFLA_ADDRESS as aa:bb:cc:dd:ee:ff.
    pub mac: Option<String>,
    pub mtu: u32,
    /// IFLA_LINK: for a veth, its peer's index, counted in the namespace
    /// `link_netnsid` names when that is set (else in this one).
    pub peer_index: Option<u32>,
    /// IFLA_LINK_NETNSID: the peer lives in another namespace, known here by
    /// this id.
    pub link_netnsid: Option<i32>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// One IPv4 address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressInfo {
    pub index: u32,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

/// One IPv4 route of the main table. (A multipath route's hops are not
/// read: its gateway and oif are None.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// None for the default route.
    pub destination: Option<Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// Output interface index.
    pub oif: Option<u32>,
    pub table: u32,
}

/// RT_TABLE_MAIN: the table `ip route` shows.
const MAIN_TABLE: u8 = 254;
/// A dump the kernel flags as interrupted (NLM_F_DUMP_INTR: the objects
/// changed while it was being written) is redone this many times at most.
const DUMP_TRIES: usize = 5;
/// The receive buffer to start with; a bigger datagram grows it (see
/// `receive`). Dump datagrams are at most about 32 KiB.
const RECEIVE_BUFFER: usize = 64 * 1024;

/// A NETLINK_ROUTE socket bound in the caller's network namespace.
pub struct Netlink {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Netlink {
    /// Opens the socket, in (and for good bound to) the calling thread's
    /// network namespace.
    pub fn open() -> Result<Netlink, NetlinkError> {
        let op = "opening NETLINK_ROUTE";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| socket_error(op, &e))?;
        // Port 0: the kernel picks a unique port id for us.
        socket.bind_auto().map_err(|e| socket_error(op, &e))?;
        Ok(Netlink {
            socket,
            sequence: 0,
            buffer: Vec::with_capacity(RECEIVE_BUFFER),
        })
    }

    /// The index of the link called `name`; None when there is none (ENODEV).
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetlinkError> {
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName(name.into()));
        let op = format!("RTM_GETLINK {name}");
        match self.ack(&op, RouteNetlinkMessage::GetLink(message), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
                _ => None,
            })),
            Err(NetlinkError::Kernel {
                errno: Errno::ENODEV,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip link add NAME type bridge`
    pub fn create_bridge(&mut self, name: &str) -> Result<(), NetlinkError> {
        let op = format!("RTM_NEWLINK bridge {name}");
        self.create_link(&op, name, vec![IflaInfo::Kind(InfoKind::Bridge)])
    }

    /// `ip link add NAME type veth peer name PEER`: both ends in this
    /// namespace, both down.
    pub fn create_veth(&mut self, name: &str, peer: &str) -> Result<(), NetlinkError> {
        let mut peer_message = LinkMessage::default();
        peer_message
            .attributes
            .push(LinkAttribute::IfName(peer.into()));
        let info = vec![
            IflaInfo::Kind(InfoKind::Veth),
            IflaInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
        ];
        self.create_link(&format!("RTM_NEWLINK veth {name} peer {peer}"), name, info)
    }

    /// `ip link set INDEX master MASTER`: makes the link a port of a bridge.
    pub fn set_master(&mut self, index: u32, master: u32) -> Result<(), NetlinkError> {
        let message = link_message(index, LinkAttribute::Controller(master));
        self.set_link(&format!("RTM_SETLINK {index} master {master}"), message)
    }

    /// `ip link set INDEX address MAC`. A bridge given its own address keeps
    /// it; otherwise it takes the lowest of its ports' and changes when that
    /// port leaves, which strands the neighbours' ARP entries for it.
    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        let message = link_message(index, LinkAttribute::Address(mac.to_vec()));
        self.set_link(&format!("RTM_SETLINK {index} address"), message)
    }

    /// `ip link set INDEX up`
    pub fn set_up(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        // Only the bits in change_mask are changed: IFF_UP alone.
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        self.set_link(&format!("RTM_SETLINK {index} up"), message)
    }

    /// `ip link set INDEX name NEW_NAME`. Rename links while they are down:
    /// kernels before 6.2 refuse to rename a running interface (EBUSY),
    /// since programs may hold its old name.
    pub fn rename(&mut self, index: u32, new_name: &str) -> Result<(), NetlinkError> {
        let message = link_message(index, LinkAttribute::IfName(new_name.into()));
        self.set_link(&format!("RTM_SETLINK {index} name {new_name}"), message)
    }

    /// `ip link set INDEX netns PID`: moves the link into the network
    /// namespace of process `pid` (IFLA_NET_NS_PID). It leaves this namespace
    /// down, and its addresses are dropped.
    pub fn move_to_netns_of_pid(&mut self, index: u32, pid: u32) -> Result<(), NetlinkError> {
        let message = link_message(index, LinkAttribute::NetNsPid(pid));
        self.set_link(&format!("RTM_SETLINK {index} netns of pid {pid}"), message)
    }

    /// `ip addr add ADDR/PREFIX brd + dev INDEX`
    pub fn add_address(
        &mut self,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        let mut message = AddressMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.prefix_len = prefix;
        message.header.scope = AddressScope::Universe;
        message.header.index = index;
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS the other end
        // on point-to-point links, else the same. `ip` sends both.
        message.attributes = vec![
            AddressAttribute::Local(addr.into()),
            AddressAttribute::Address(addr.into()),
        ];
        // /31 and /32 have no broadcast address (RFC 3021).
        if prefix < 31 {
            let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
            let broadcast = Ipv4Addr::from(u32::from(addr) | host_bits);
            message
                .attributes
                .push(AddressAttribute::Broadcast(broadcast));
        }
        let op = format!("RTM_NEWADDR {addr}/{prefix} dev {index}");
        let request = RouteNetlinkMessage::NewAddress(message);
        self.ack(&op, request, NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// `ip route add default via GATEWAY`: main table, scope universe,
    /// protocol boot (what `ip route add` uses unless told otherwise). The
    /// kernel picks the interface from the route that reaches the gateway.
    pub fn add_default_route(&mut self, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut message = RouteMessage::default();
        message.header = RouteHeader {
            address_family: AddressFamily::Inet,
            table: MAIN_TABLE,
            protocol: RouteProtocol::Boot,
            scope: RouteScope::Universe,
            kind: RouteType::Unicast,
            ..RouteHeader::default()
        };
        message
            .attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        let op = format!("RTM_NEWROUTE default via {gateway}");
        let request = RouteNetlinkMessage::NewRoute(message);
        self.ack(&op, request, NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// `ip link del INDEX`. Deleting one end of a veth deletes both.
    pub fn delete_link(&mut self, index: u32) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        let op = format!("RTM_DELLINK {index}");
        self.ack(&op, RouteNetlinkMessage::DelLink(message), 0)
            .map(drop)
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> Result<Vec<LinkInfo>, NetlinkError> {
        let request = RouteNetlinkMessage::GetLink(LinkMessage::default());
        let replies = self.dump("RTM_GETLINK dump", &request)?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(link_info(link)),
                _ => None,
            })
            .collect())
    }

    /// Every IPv4 address of the namespace.
    pub fn addresses(&mut self) -> Result<Vec<AddressInfo>, NetlinkError> {
        let mut message = AddressMessage::default();
        // The family in a dump request filters: IPv4 only.
        message.header.family = AddressFamily::Inet;
        let request = RouteNetlinkMessage::GetAddress(message);
        let replies = self.dump("RTM_GETADDR dump", &request)?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(address) => address_info(address),
                _ => None,
            })
            .collect())
    }

    /// The IPv4 routes of the main table (what `ip route` shows).
    pub fn routes(&mut self) -> Result<Vec<RouteInfo>, NetlinkError> {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        let request = RouteNetlinkMessage::GetRoute(message);
        // The dump holds every table (local too): keep the main one.
        let replies = self.dump("RTM_GETROUTE dump", &request)?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(route) => route_info(route),
                _ => None,
            })
            .filter(|route| route.table == u32::from(MAIN_TABLE))
            .collect())
    }

    /// RTM_NEWLINK of a new link of the given kind, failing if the name is
    /// taken.
    fn create_link(
        &mut self,
        op: &str,
        name: &str,
        info: Vec<IflaInfo>,
    ) -> Result<(), NetlinkError> {
        let mut message = LinkMessage::default();
        message.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::LinkInfo(info),
        ];
        let request = RouteNetlinkMessage::NewLink(message);
        self.ack(op, request, NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    fn set_link(&mut self, op: &str, message: LinkMessage) -> Result<(), NetlinkError> {
        self.ack(op, RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// Sends a request with NLM_F_ACK and returns the replies that came
    /// before the kernel's ack (a GET's answer), or the error it sent.
    fn ack(
        &mut self,
        op: &str,
        request: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(op, request, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map(|(replies, _)| replies)
    }

    /// Sends a dump request and collects every part of the answer, redoing
    /// it when the kernel says the objects changed meanwhile. (A dump ends
    /// with NLMSG_DONE; the kernel sends no ack for it, so none is asked.)
    fn dump(
        &mut self,
        op: &str,
        request: &RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        for _ in 0..DUMP_TRIES {
            let (replies, interrupted) =
                self.exchange(op, request.clone(), NLM_F_REQUEST | NLM_F_DUMP)?;
            if !interrupted {
                return Ok(replies);
            }
        }
        Err(NetlinkError::Kernel {
            op: format!("{op} (kept changing while dumped)"),
            errno: Errno::EINTR,
        })
    }

    /// One request and its whole answer: the inner messages, and whether
    /// any part of a dump was flagged NLM_F_DUMP_INTR. The answer ends with
    /// an ack or error (NLMSG_ERROR) or, for a dump, NLMSG_DONE.
    fn exchange(
        &mut self,
        op: &str,
        request: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), NetlinkError> {
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        let kernel = SocketAddr::new(0, 0);
        retry_interrupted(|| self.socket.send_to(&bytes, &kernel, 0))
            .map_err(|e| socket_error(op, &e))?;

        let mut replies = Vec::new();
        let mut interrupted = false;
        loop {
            self.receive(op)?;
            // One datagram may hold several messages, each 4-byte aligned.
            let mut offset = 0;
            while offset < self.buffer.len() {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[offset..])
                        .map_err(|e| NetlinkError::Decode {
                            op: op.into(),
                            detail: e.to_string(),
                        })?;
                let length = reply.header.length as usize;
                if length == 0 {
                    return Err(NetlinkError::Decode {
                        op: op.into(),
                        detail: "zero-length message".into(),
                    });
                }
                offset += length.next_multiple_of(4);
                // The rest of an answer to an earlier request that failed
                // half-way through (a dump cut short by an error here).
                if reply.header.sequence_number != sequence {
                    continue;
                }
                interrupted |= reply.header.flags & NLM_F_DUMP_INTR != 0;
                match reply.payload {
                    NetlinkPayload::InnerMessage(inner) => replies.push(inner),
                    NetlinkPayload::Error(error) => {
                        return match error.code {
                            None => Ok((replies, interrupted)),
                            Some(code) => Err(kernel_error(op, code.get())),
                        };
                    }
                    NetlinkPayload::Done(done) if done.code < 0 => {
                        return Err(kernel_error(op, done.code));
                    }
                    NetlinkPayload::Done(_) => return Ok((replies, interrupted)),
                    _ => {}
                }
            }
        }
    }

    /// Reads one datagram into `self.buffer`, whole: it is peeked at first
    /// (MSG_TRUNC gives its real length) so that one larger than the buffer
    /// grows the buffer instead of being cut.
    fn receive(&mut self, op: &str) -> Result<(), NetlinkError> {
        self.buffer.clear();
        let length = retry_interrupted(|| {
            self.socket
                .recv(&mut self.buffer, libc::MSG_PEEK | libc::MSG_TRUNC)
        })
        .map_err(|e| socket_error(op, &e))?;
        self.buffer.clear();
        self.buffer.reserve(length);
        retry_interrupted(|| self.socket.recv(&mut self.buffer, 0))
            .map_err(|e| socket_error(op, &e))?;
        Ok(())
    }
}

/// A request about link `index` carrying one attribute.
fn link_message(index: u32, attribute: LinkAttribute) -> LinkMessage {
    let mut message = LinkMessage::default();
    message.header.index = index;
    message.attributes.push(attribute);
    message
}

fn link_info(message: LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: message.header.index,
        up: message.header.flags.contains(LinkFlags::Up),
        ..LinkInfo::default()
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => info.name = name,
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.iter().find_map(|i| match i {
                    IflaInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            LinkAttribute::Controller(master) => info.master = Some(master),
            LinkAttribute::OperState(state) => info.oper_state = state.to_string(),
            LinkAttribute::Address(mac) => {
                let hex: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
                info.mac = Some(hex.join(":"));
            }
            LinkAttribute::Mtu(mtu) => info.mtu = mtu,
            LinkAttribute::Link(peer) => info.peer_index = Some(peer),
            LinkAttribute::LinkNetNsId(id) => info.link_netnsid = Some(id),
            LinkAttribute::Stats64(stats) => {
                info.rx_bytes = stats.rx_bytes;
                info.tx_bytes = stats.tx_bytes;
                info.rx_packets = stats.rx_packets;
                info.tx_packets = stats.tx_packets;
            }
            _ => {}
        }
    }
    info
}

fn address_info(message: AddressMessage) -> Option<AddressInfo> {
    // IFA_LOCAL is this side's address; IFA_ADDRESS only differs from it on
    // point-to-point links, and is all there is when IFA_LOCAL is absent.
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(std::net::IpAddr::V4(a)) => local = Some(*a),
            AddressAttribute::Address(std::net::IpAddr::V4(a)) => address = Some(*a),
            _ => {}
        }
    }
    Some(AddressInfo {
        index: message.header.index,
        address: local.or(address)?,
        prefix: message.header.prefix_len,
    })
}

fn route_info(message: RouteMessage) -> Option<RouteInfo> {
    if message.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut route = RouteInfo {
        destination: None,
        prefix: message.header.destination_prefix_length,
        gateway: None,
        oif: None,
        // The header holds 8 bits of the table id; RTA_TABLE all 32.
        table: u32::from(message.header.table),
    };
    for attribute in message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => route.destination = Some(a),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => route.gateway = Some(a),
            RouteAttribute::Oif(index) => route.oif = Some(index),
            RouteAttribute::Table(table) => route.table = table,
            _ => {}
        }
    }
    Some(route)
}

fn kernel_error(op: &str, code: i32) -> NetlinkError {
    // The kernel sends a negative errno.
    NetlinkError::Kernel {
        op: op.into(),
        errno: Errno::from_raw(code.saturating_abs()),
    }
}

fn socket_error(op: &str, error: &io::Error) -> NetlinkError {
    NetlinkError::Socket {
        op: op.into(),
        errno: error.raw_os_error().map_or(Errno::EIO, Errno::from_raw),
    }
}

/// A signal handled without SA_RESTART makes a blocking call fail with EINTR;
/// that is no failure of the request.
fn retry_interrupted<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// These need root and make real links (named damdatest-*, removed at the
/// end even when an assertion fails), which stay down or carrier-less, so no
/// packet is sent.
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeSet;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    /// Deletes the named links, and kills the child, when the test ends.
    #[derive(Default)]
    struct Cleanup {
        links: Vec<String>,
        child: Option<Child>,
    }

    impl Drop for Cleanup {
        fn drop(&mut self) {
            if let Some(child) = &mut self.child {
                let _ = child.kill();
                let _ = child.wait();
            }
            for name in &self.links {
                // `ip`, not the client under test: cleaning up must not
                // depend on it working.
                let _ = Command::new("ip")
                    .args(["link", "del", name])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    fn random() -> u32 {
        getrandom::u32().expect("the kernel's random source works")
    }

    /// `ip -j ARGS`, parsed.
    fn ip_json(args: &[&str]) -> Value {
        let output = Command::new("ip").arg("-j").args(args).output().unwrap();
        assert!(output.status.success(), "ip -j {args:?}: {output:?}");
        serde_json::from_slice(&output.stdout).unwrap()
    }

    fn find<'a>(links: &'a [LinkInfo], name: &str) -> &'a LinkInfo {
        links
            .iter()
            .find(|link| link.name == name)
            .unwrap_or_else(|| panic!("{name} in {links:#?}"))
    }

    fn kernel_errno(result: Result<(), NetlinkError>) -> (Errno, String) {
        match result {
            Err(e @ NetlinkError::Kernel { errno, .. }) => (errno, e.to_string()),
            other => panic!("expected a kernel error, got {other:?}"),
        }
    }

    /// Where our view of a link differs from `ip -d -s link show`'s.
    fn differences_from_ip(link: &LinkInfo, links: &[LinkInfo]) -> Vec<String> {
        let json = ip_json(&["-d", "-s", "link", "show", "dev", &link.name]);
        let ip = &json[0];
        let flags = ip["flags"].as_array().unwrap();
        let master = link.master.map(|index| {
            let master = links.iter().find(|l| l.index == index).unwrap();
            master.name.as_str()
        });
        let stats = &ip["stats64"];
        let pairs: [(&str, &Value, Value); 12] = [
            ("ifindex", &ip["ifindex"], link.index.into()),
            ("ifname", &ip["ifname"], link.name.as_str().into()),
            ("mtu", &ip["mtu"], link.mtu.into()),
            (
                "operstate",
                &ip["operstate"],
                link.oper_state.as_str().into(),
            ),
            ("address", &ip["address"], link.mac.as_deref().into()),
            (
                "kind",
                &ip["linkinfo"]["info_kind"],
                link.kind.as_deref().into(),
            ),
            ("master", &ip["master"], master.into()),
            ("up", &flags.contains(&"UP".into()).into(), link.up.into()),
            ("rx bytes", &stats["rx"]["bytes"], link.rx_bytes.into()),
            ("tx bytes", &stats["tx"]["bytes"], link.tx_bytes.into()),
            (
                "rx packets",
                &stats["rx"]["packets"],
                link.rx_packets.into(),
            ),
            (
                "tx packets",
                &stats["tx"]["packets"],
                link.tx_packets.into(),
            ),
        ];
        pairs
            .into_iter()
            .filter(|(_, ip, ours)| *ip != ours)
            .map(|(what, ip, ours)| format!("{what}: ip {ip}, ours {ours}"))
            .collect()
    }

    /// Our view of a link against `ip`'s. The operstate settles a moment
    /// after a link goes up (the kernel's linkwatch), so both are read again
    /// until they agree, for a few seconds at most.
    fn check_against_ip(netlink: &mut Netlink, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let links = netlink.links().unwrap();
            let differences = differences_from_ip(find(&links, name), &links);
            if differences.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "{name}: {differences:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[test]
    fn bridge_and_veth_made_read_renamed_and_deleted() {
        let tag = format!("{:04x}", random() & 0xffff);
        let bridge = format!("damdatest-b{tag}");
        let (a, b) = (format!("damdatest-{tag}a"), format!("damdatest-{tag}b"));
        let renamed = format!("damdatest-{tag}r");
        assert!(bridge.len() <= 15 && renamed.len() <= 15);
        let _cleanup = Cleanup {
            links: vec![bridge.clone(), a.clone(), renamed.clone()],
            child: None,
        };
        let subnet = u8::try_from(random() % 256).unwrap();
        let address = Ipv4Addr::new(10, 250, subnet, 1);

        let mut netlink = Netlink::open().unwrap();
        assert_eq!(netlink.link_index(&bridge).unwrap(), None);
        netlink.create_bridge(&bridge).unwrap();
        let (errno, message) = kernel_errno(netlink.create_bridge(&bridge));
        assert_eq!(errno, Errno::EEXIST);
        assert_eq!(
            message,
            format!("RTM_NEWLINK bridge {bridge}: EEXIST: File exists")
        );
        netlink.create_veth(&a, &b).unwrap();
        let bridge_index = netlink.link_index(&bridge).unwrap().unwrap();
        let a_index = netlink.link_index(&a).unwrap().unwrap();
        let b_index = netlink.link_index(&b).unwrap().unwrap();

        netlink.set_master(a_index, bridge_index).unwrap();
        netlink.set_up(bridge_index).unwrap();
        netlink.set_up(a_index).unwrap();
        netlink.add_address(bridge_index, address, 24).unwrap();

        let links = netlink.links().unwrap();
        let (bridge_link, a_link, b_link) =
            (find(&links, &bridge), find(&links, &a), find(&links, &b));
        assert_eq!(bridge_link.index, bridge_index);
        assert_eq!(bridge_link.kind.as_deref(), Some("bridge"));
        assert!(bridge_link.up);
        assert_eq!(a_link.kind.as_deref(), Some("veth"));
        assert_eq!(a_link.master, Some(bridge_index));
        assert!(a_link.up && !b_link.up);
        assert_eq!(a_link.peer_index, Some(b_index));
        assert_eq!(b_link.peer_index, Some(a_index));
        assert_eq!(a_link.link_netnsid, None);
        for name in [&bridge, &a, &b] {
            check_against_ip(&mut netlink, name);
        }

        let ours: Vec<_> = netlink
            .addresses()
            .unwrap()
            .into_iter()
            .filter(|addr| addr.index == bridge_index)
            .collect();
        assert_eq!(
            ours,
            [AddressInfo {
                index: bridge_index,
                address,
                prefix: 24
            }]
        );
        let ip = ip_json(&["-4", "addr", "show", "dev", &bridge]);
        let info = &ip[0]["addr_info"][0];
        assert_eq!(info["local"], address.to_string().as_str());
        assert_eq!(info["prefixlen"], 24);
        assert_eq!(info["broadcast"], format!("10.250.{subnet}.255").as_str());
        // The address brought its subnet's route into the main table.
        let route = RouteInfo {
            destination: Some(Ipv4Addr::new(10, 250, subnet, 0)),
            prefix: 24,
            gateway: None,
            oif: Some(bridge_index),
            table: 254,
        };
        assert!(netlink.routes().unwrap().contains(&route));

        netlink.rename(b_index, &renamed).unwrap();
        assert_eq!(netlink.link_index(&renamed).unwrap(), Some(b_index));
        assert_eq!(netlink.link_index(&b).unwrap(), None);

        // Deleting one end of the veth deletes the other.
        netlink.delete_link(a_index).unwrap();
        netlink.delete_link(bridge_index).unwrap();
        for name in [&bridge, &a, &renamed] {
            assert_eq!(netlink.link_index(name).unwrap(), None);
            let status = Command::new("ip")
                .args(["link", "show", "dev", name])
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert!(!status.success(), "{name} is still there");
        }
        let (errno, message) = kernel_errno(netlink.delete_link(bridge_index));
        assert_eq!(errno, Errno::ENODEV);
        assert!(message.starts_with(&format!("RTM_DELLINK {bridge_index}: ENODEV")));
    }

    #[test]
    fn veth_peer_moved_into_another_namespace() {
        let tag = format!("{:04x}", random() & 0xffff);
        let (a, b) = (format!("damdatest-{tag}a"), format!("damdatest-{tag}b"));
        let child = Command::new("unshare")
            .args(["-n", "sleep", "30"])
            .spawn()
            .unwrap();
        let pid = child.id();
        let cleanup = Cleanup {
            links: vec![a.clone()],
            child: Some(child),
        };
        // unshare execs sleep once the namespace is made.
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap() == ours {
            assert!(Instant::now() < deadline, "unshare -n never unshared");
            std::thread::sleep(Duration::from_millis(10));
        }

        let mut netlink = Netlink::open().unwrap();
        netlink.create_veth(&a, &b).unwrap();
        let b_index = netlink.link_index(&b).unwrap().unwrap();
        netlink.move_to_netns_of_pid(b_index, pid).unwrap();
        assert_eq!(netlink.link_index(&b).unwrap(), None);
        let links = netlink.links().unwrap();
        let a_link = find(&links, &a);
        assert!(a_link.link_netnsid.is_some(), "{a_link:?}");
        assert!(a_link.peer_index.is_some(), "{a_link:?}");

        let output = Command::new("nsenter")
            .args(["-t", &pid.to_string(), "-n", "ip", "-j", "link", "show"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        let there: Value = serde_json::from_slice(&output.stdout).unwrap();
        let names: Vec<&str> = there
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|link| link["ifname"].as_str())
            .collect();
        assert!(names.contains(&b.as_str()), "{names:?}");
        // IFLA_LINK of a counts in the other namespace: b's index there.
        let b_there = there
            .as_array()
            .unwrap()
            .iter()
            .find(|link| link["ifname"] == b.as_str())
            .unwrap();
        assert_eq!(b_there["ifindex"], a_link.peer_index.unwrap());
        drop(cleanup);
    }

    #[test]
    fn default_route_in_a_throwaway_namespace() {
        // A network namespace belongs to a thread: this one unshares its own
        // and the test's other threads stay in the host's. The namespace goes
        // when the thread and its socket do.
        let thread = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut netlink = Netlink::open().unwrap();
            let lo = netlink.link_index("lo").unwrap().unwrap();
            netlink.set_up(lo).unwrap();
            // A veth with both ends up: its carrier is on, as a route's
            // gateway needs. (This kernel may lack the dummy driver.)
            netlink.create_veth("v0", "v1").unwrap();
            let v0 = netlink.link_index("v0").unwrap().unwrap();
            let v1 = netlink.link_index("v1").unwrap().unwrap();
            netlink.set_up(v0).unwrap();
            netlink.set_up(v1).unwrap();
            netlink
                .add_address(v0, Ipv4Addr::new(10, 251, 0, 2), 24)
                .unwrap();
            let gateway = Ipv4Addr::new(10, 251, 0, 1);
            netlink.add_default_route(gateway).unwrap();
            let (errno, _) = kernel_errno(netlink.add_default_route(gateway));
            assert_eq!(errno, Errno::EEXIST);

            let names: BTreeSet<_> = netlink
                .links()
                .unwrap()
                .into_iter()
                .map(|link| (link.name, link.kind))
                .collect();
            let expected = [
                ("lo".into(), None),
                ("v0".into(), Some("veth".into())),
                ("v1".into(), Some("veth".into())),
            ];
            assert_eq!(names, BTreeSet::from(expected));
            let addresses: BTreeSet<_> = netlink
                .addresses()
                .unwrap()
                .into_iter()
                .map(|a| (a.index, a.address, a.prefix))
                .collect();
            let expected = [
                (lo, Ipv4Addr::LOCALHOST, 8),
                (v0, Ipv4Addr::new(10, 251, 0, 2), 24),
            ];
            assert_eq!(addresses, BTreeSet::from(expected));
            // The main table only: the local routes of lo and v0 are elsewhere.
            let routes: BTreeSet<_> = netlink
                .routes()
                .unwrap()
                .into_iter()
                .map(|r| (r.destination, r.prefix, r.gateway, r.oif, r.table))
                .collect();
            let expected = [
                (None, 0, Some(gateway), Some(v0), 254),
                (Some(Ipv4Addr::new(10, 251, 0, 0)), 24, None, Some(v0), 254),
            ];
            assert_eq!(routes, BTreeSet::from(expected));
        });
        thread.join().unwrap();
    }

    #[test]
    fn dumps_spanning_many_datagrams() {
        // Links enough that their dump takes several datagrams (about 1.5
        // KiB each, 32 KiB a datagram), made in a throwaway namespace.
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut netlink = Netlink::open().unwrap();
            for i in 0..100 {
                netlink
                    .create_veth(&format!("m{i}a"), &format!("m{i}b"))
                    .unwrap();
            }
            let links = netlink.links().unwrap();
            assert_eq!(links.len(), 1 + 200);
            let names: BTreeSet<_> = links.iter().map(|link| link.name.as_str()).collect();
            assert_eq!(names.len(), 201);
            assert!(names.contains("lo") && names.contains("m99b"));
            // And the socket is still in step: the next request is answered.
            let m0a = find(&links, "m0a").index;
            assert_eq!(netlink.link_index("m0a").unwrap(), Some(m0a));
        })
        .join()
        .unwrap();
    }

    /// The host's main table as `ip route` shows it: (destination/prefix or
    /// "default", gateway, device name).
    fn ip_routes() -> BTreeSet<(String, Option<String>, Option<String>)> {
        let json = ip_json(&["-4", "route", "show", "table", "main"]);
        json.as_array()
            .unwrap()
            .iter()
            .map(|route| {
                let dst = route["dst"].as_str().unwrap();
                // ip leaves "/32" off host routes.
                let dst = if dst == "default" || dst.contains('/') {
                    dst.to_string()
                } else {
                    format!("{dst}/32")
                };
                let text = |key: &str| route[key].as_str().map(String::from);
                (dst, text("gateway"), text("dev"))
            })
            .collect()
    }

    #[test]
    fn host_routes_as_ip_shows_them() {
        let mut netlink = Netlink::open().unwrap();
        // Other tests may change routes meanwhile: agree once with `ip`
        // reading the same table before and after.
        for _ in 0..5 {
            let before = ip_routes();
            let links = netlink.links().unwrap();
            let ours: BTreeSet<_> = netlink
                .routes()
                .unwrap()
                .into_iter()
                .map(|route| {
                    assert_eq!(route.table, 254);
                    let dst = match route.destination {
                        None => "default".to_string(),
                        Some(dst) => format!("{dst}/{}", route.prefix),
                    };
                    let dev = route.oif.map(|oif| {
                        let link = links.iter().find(|link| link.index == oif).unwrap();
                        link.name.clone()
                    });
                    (dst, route.gateway.map(|g| g.to_string()), dev)
                })
                .collect();
            if ours == before && ip_routes() == before {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("routes() never agreed with ip route show table main");
    }
}
