//! The packet filter side of the bridge network, in an nftables table of its
//! own (`ip damda`), as Docker keeps its rules in the DOCKER chains: the
//! port forwards (DNAT), masquerading for traffic that leaves the subnet, the
//! hairpin masquerade that lets one box reach another through the gateway
//! address, and the forward chain. The table is rebuilt whole from the
//! leases in one nft transaction, so it never holds a half-made rule set and
//! a dead box's rules go with its lease.

use super::registry::Lease;
use super::subnet::Subnet;
use super::NetworkError;
use nftables::batch::Batch;
use nftables::expr::{Expression, NamedExpression, Payload, PayloadField, Prefix, CT};
use nftables::helper;
use nftables::schema::{Chain, NfListObject, Rule, Table};
use nftables::stmt::{Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use std::borrow::Cow;

pub const TABLE: &str = "damda";
/// The port the box's service listens on (busybox httpd in the image).
pub const BOX_PORT: u16 = 80;

fn table() -> Table<'static> {
    Table {
        family: NfFamily::IP,
        name: TABLE.into(),
        handle: None,
    }
}

fn base_chain(
    name: &'static str,
    kind: NfChainType,
    hook: NfHook,
    prio: i32,
) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: name.into(),
        _type: Some(kind),
        hook: Some(hook),
        prio: Some(prio),
        policy: Some(NfChainPolicy::Accept),
        ..Default::default()
    })
}

fn rule(
    chain: &'static str,
    expr: Vec<Statement<'static>>,
    comment: String,
) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: TABLE.into(),
        chain: chain.into(),
        expr: Cow::Owned(expr),
        comment: Some(comment.into()),
        ..Default::default()
    })
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: name.into(),
        },
    )))
}

fn text(value: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(value.into()))
}

fn interface(key: nftables::expr::MetaKey, op: Operator, bridge: &str) -> Statement<'static> {
    matches(
        Expression::Named(NamedExpression::Meta(nftables::expr::Meta { key })),
        op,
        text(bridge),
    )
}

fn conntrack(key: &'static str, values: &[&'static str]) -> Statement<'static> {
    let right = match values {
        [one] => text(*one),
        many => Expression::List(many.iter().map(|v| text(*v)).collect()),
    };
    matches(
        Expression::Named(NamedExpression::CT(CT {
            key: key.into(),
            family: None,
            dir: None,
        })),
        Operator::IN,
        right,
    )
}

fn in_subnet(direction: &'static str, subnet: &Subnet) -> Statement<'static> {
    matches(
        field("ip", direction),
        Operator::EQ,
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(text(subnet.network().to_string())),
            len: u32::from(subnet.prefix()),
        })),
    )
}

/// `ip daddr GATEWAY tcp dport PORT dnat to BOX:80`.
fn forward_rule(
    gateway: &str,
    lease: &Lease,
    from_bridge: Option<&str>,
) -> Vec<Statement<'static>> {
    let mut expr = Vec::new();
    if let Some(bridge) = from_bridge {
        expr.push(interface(
            nftables::expr::MetaKey::Iifname,
            Operator::EQ,
            bridge,
        ));
    }
    expr.push(matches(field("ip", "daddr"), Operator::EQ, text(gateway)));
    expr.push(matches(
        field("tcp", "dport"),
        Operator::EQ,
        Expression::Number(u32::from(lease.host_port)),
    ));
    expr.push(Statement::DNAT(Some(NAT {
        addr: Some(text(lease.address.to_string())),
        family: None,
        port: Some(Expression::Number(u32::from(BOX_PORT))),
        flags: None,
    })));
    expr
}

/// The whole table for these leases; with none, the table is only removed.
pub fn ruleset(
    bridge: &str,
    subnet: &Subnet,
    leases: &[Lease],
) -> nftables::schema::Nftables<'static> {
    use nftables::expr::MetaKey::{Iifname, Oifname};
    let mut batch = Batch::new();
    // Adding first makes the delete succeed whether or not the table exists.
    batch.add(NfListObject::Table(table()));
    batch.delete(NfListObject::Table(table()));
    if leases.is_empty() {
        return batch.to_nftables();
    }
    let gateway = subnet.gateway().to_string();
    batch.add(NfListObject::Table(table()));
    // dstnat (-100) and srcnat (100), the priorities iptables' nat table uses.
    batch.add(base_chain(
        "prerouting",
        NfChainType::NAT,
        NfHook::Prerouting,
        -100,
    ));
    batch.add(base_chain("output", NfChainType::NAT, NfHook::Output, -100));
    batch.add(base_chain(
        "postrouting",
        NfChainType::NAT,
        NfHook::Postrouting,
        100,
    ));
    batch.add(base_chain(
        "forward",
        NfChainType::Filter,
        NfHook::Forward,
        0,
    ));
    for lease in leases {
        let about = format!("box {} port {}", lease.box_id, lease.host_port);
        batch.add(rule(
            "prerouting",
            forward_rule(&gateway, lease, Some(bridge)),
            about.clone(),
        ));
        batch.add(rule("output", forward_rule(&gateway, lease, None), about));
    }
    batch.add(rule(
        "postrouting",
        vec![
            in_subnet("saddr", subnet),
            interface(Oifname, Operator::NEQ, bridge),
            Statement::Masquerade(None),
        ],
        "leaving the subnet: the host's address".into(),
    ));
    batch.add(rule(
        "postrouting",
        vec![
            in_subnet("saddr", subnet),
            interface(Oifname, Operator::EQ, bridge),
            conntrack("status", &["dnat"]),
            Statement::Masquerade(None),
        ],
        "hairpin: box to box through the gateway".into(),
    ));
    batch.add(rule(
        "forward",
        vec![
            interface(Iifname, Operator::EQ, bridge),
            Statement::Accept(None),
        ],
        "from the boxes".into(),
    ));
    batch.add(rule(
        "forward",
        vec![
            interface(Oifname, Operator::EQ, bridge),
            conntrack("state", &["established", "related"]),
            Statement::Accept(None),
        ],
        "replies to the boxes".into(),
    ));
    batch.to_nftables()
}

/// Replaces the table with the one these leases need.
pub fn apply(bridge: &str, subnet: &Subnet, leases: &[Lease]) -> Result<(), NetworkError> {
    helper::apply_ruleset(&ruleset(bridge, subnet, leases))
        .map_err(|err| NetworkError::Nft(err.to_string()))
}

/// `nft list table ip damda`, as the kernel has it; None without the table.
pub fn listing() -> Option<String> {
    let output = std::process::Command::new("nft")
        .args(["list", "table", "ip", TABLE])
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Base chains of other tables that hook forward with policy drop (Docker
/// sets its FORWARD chain so): a drop in any base chain is final, whatever
/// damda's own chain accepts.
pub fn forward_drops() -> Vec<String> {
    let Ok(ruleset) =
        helper::get_current_ruleset_with_args(helper::DEFAULT_NFT, ["list", "chains"])
    else {
        return Vec::new();
    };
    ruleset
        .objects
        .iter()
        .filter_map(|object| match object {
            nftables::schema::NfObject::ListObject(NfListObject::Chain(chain))
                if chain.table != TABLE
                    && chain.hook == Some(NfHook::Forward)
                    && chain.policy == Some(NfChainPolicy::Drop) =>
            {
                Some(format!("{:?} {} {}", chain.family, chain.table, chain.name).to_lowercase())
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease() -> Lease {
        Lease {
            owner_pid: 1,
            owner_start: 1,
            box_id: "0123ab".into(),
            address: "10.221.0.2".parse().unwrap(),
            host_veth: "damda-h2".into(),
            peer: "damda-c2".into(),
            host_port: 8081,
        }
    }

    #[test]
    fn the_table_forwards_each_lease_and_masquerades_the_subnet() {
        let subnet: Subnet = "10.221.0.0/24".parse().unwrap();
        let json = serde_json::to_string(&ruleset("damda0", &subnet, &[lease()])).unwrap();
        for expected in [
            r#""dnat":{"addr":"10.221.0.2","port":80}"#,
            r#""right":8081"#,
            r#""right":"10.221.0.1""#,
            r#""masquerade":null"#,
            r#""prefix":{"addr":"10.221.0.0","len":24}"#,
            r#""right":"dnat""#,
            r#""right":["established","related"]"#,
        ] {
            assert!(json.contains(expected), "{expected} missing from {json}");
        }
        assert_eq!(
            json.matches(r#""dnat":"#).count(),
            2,
            "prerouting and output"
        );
    }

    #[test]
    fn without_leases_the_table_is_only_removed() {
        let subnet: Subnet = "10.221.0.0/24".parse().unwrap();
        let value = serde_json::to_value(ruleset("damda0", &subnet, &[])).unwrap();
        let commands = value["nftables"].as_array().unwrap();
        assert_eq!(commands.len(), 2);
        assert!(commands[1].get("delete").is_some());
    }
}
