//! The private IPv4 subnet boxes get addresses from, and the check that it
//! collides with nothing the host already routes (docker0's 172.17.0.0/16,
//! podman's 10.88.0.0/16, the host's own networks).

use super::NetworkError;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network: its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

/// The default: far from docker0 (172.17.0.0/16), Docker's user networks
/// (172.18–31.0.0/16, 192.168.0.0/16), podman (10.88.0.0/16) and the
/// Kubernetes defaults (10.96.0.0/12, 10.244.0.0/16).
pub const DEFAULT_SUBNET: &str = "10.221.0.0/24";

impl Subnet {
    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The gateway, on the host's bridge: the first host address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.host(1)
            .expect("a subnet of /30 or larger has a first host")
    }

    /// The `n`th address of the subnet, if it is a host address (neither the
    /// network nor the broadcast address).
    pub fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix);
        (n >= 1 && u64::from(n) < size - 1).then(|| Ipv4Addr::from(u32::from(self.network) + n))
    }

    /// Which host number `address` is, if it is in the subnet.
    pub fn host_number(&self, address: Ipv4Addr) -> Option<u32> {
        self.contains(address)
            .then(|| u32::from(address) - u32::from(self.network))
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & Self::mask(self.prefix) == u32::from(self.network)
    }

    /// Whether the two networks share any address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = Self::mask(shorter);
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// Refuses the subnet if a route of the host (other than the bridge's
    /// own, `own_device`) covers any of it.
    pub fn check_free(
        &self,
        routes: &[(Subnet, String)],
        own_device: &str,
    ) -> Result<(), NetworkError> {
        match routes
            .iter()
            .find(|(net, device)| device != own_device && net.prefix > 0 && net.overlaps(self))
        {
            Some((net, device)) => Err(NetworkError::SubnetInUse {
                subnet: self.to_string(),
                route: net.to_string(),
                device: device.clone(),
            }),
            None => Ok(()),
        }
    }

    /// The network `address/prefix` belongs to.
    pub fn of(address: Ipv4Addr, prefix: u8) -> Subnet {
        Subnet {
            network: Ipv4Addr::from(u32::from(address) & Self::mask(prefix)),
            prefix,
        }
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetworkError;

    /// `A.B.C.D/N` with N between 16 and 29 (room for boxes, and private).
    fn from_str(text: &str) -> Result<Self, NetworkError> {
        let bad = |why: &str| NetworkError::BadSubnet {
            subnet: text.to_owned(),
            why: why.to_owned(),
        };
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| bad("expected A.B.C.D/N"))?;
        let address: Ipv4Addr = address.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|_| bad("the prefix is not a number"))?;
        if !(16..=29).contains(&prefix) {
            return Err(bad("the prefix must be between 16 and 29"));
        }
        if !address.is_private() {
            return Err(bad("not a private (RFC 1918) network"));
        }
        let subnet = Subnet::of(address, prefix);
        if subnet.network != address {
            return Err(bad("host bits are set; use the network address"));
        }
        Ok(subnet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Subnet {
        text.parse().unwrap()
    }

    #[test]
    fn default_parses_with_gateway_and_hosts() {
        let subnet = net(DEFAULT_SUBNET);
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 221, 0, 1));
        assert_eq!(subnet.host(2), Some(Ipv4Addr::new(10, 221, 0, 2)));
        assert_eq!(subnet.host(255), None, "the broadcast address");
        assert_eq!(subnet.host(0), None, "the network address");
        assert_eq!(subnet.host_number(Ipv4Addr::new(10, 221, 0, 7)), Some(7));
        assert_eq!(subnet.host_number(Ipv4Addr::new(10, 222, 0, 7)), None);
    }

    #[test]
    fn bad_subnets_say_why() {
        for (text, why) in [
            ("10.221.0.0", "A.B.C.D/N"),
            ("10.221.0.0/8", "between 16 and 29"),
            ("8.8.8.0/24", "private"),
            ("10.221.0.5/24", "host bits"),
            ("10.x.0.0/24", "IPv4"),
        ] {
            let err = text.parse::<Subnet>().unwrap_err().to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn collisions_with_docker_and_podman_are_found() {
        let docker = (net("172.17.0.0/16"), "docker0".to_owned());
        let podman = (net("10.88.0.0/16"), "podman0".to_owned());
        let default_route = (Subnet::of(Ipv4Addr::UNSPECIFIED, 0), "eth0".to_owned());
        let routes = vec![docker, podman, default_route];
        assert!(net(DEFAULT_SUBNET).check_free(&routes, "damda0").is_ok());
        let err = net("172.17.3.0/24")
            .check_free(&routes, "damda0")
            .unwrap_err();
        assert!(err.to_string().contains("docker0"), "{err}");
        assert!(net("10.88.0.0/24").check_free(&routes, "damda0").is_err());
        // The bridge's own route is not a collision.
        let own = vec![(net(DEFAULT_SUBNET), "damda0".to_owned())];
        assert!(net(DEFAULT_SUBNET).check_free(&own, "damda0").is_ok());
    }
}
