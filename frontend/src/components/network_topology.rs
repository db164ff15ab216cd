use std::rc::Rc;

use damda_protocol::{binary_size, BridgePort, Counters, NetworkView, PortForward};
use yew::prelude::*;

use crate::i18n::{net_more_boxes, net_summary, Lang};
use crate::state::{Iface, NetRates, Rate};

#[derive(PartialEq, Properties)]
pub struct NetworkTopologyProps {
    pub lang: Lang,
    pub network: NetworkView,
    pub rates: Rc<NetRates>,
}

// The drawing, in viewBox units. CSS never draws it narrower than 470 px, so
// 18-unit text stays at 14 px or more. The host's network namespace is on
// top (the forwarded port, the proxy, the bridge), the boxes' namespaces
// below, each hanging from the bridge by its veth cable.
const W: f64 = 600.0;
const LEFT: f64 = 24.0;
const RIGHT: f64 = W - 24.0;
const NODE_Y: f64 = 54.0;
const NODE_W: f64 = 264.0;
const NODE_H: f64 = 68.0;
const BRIDGE_Y: f64 = 200.0;
const BRIDGE_H: f64 = 68.0;
const HOST_BOTTOM: f64 = 334.0;
const BOX_Y: f64 = 358.0;
const THIS_W: f64 = 280.0;
const OTHER_X: f64 = LEFT + THIS_W + 16.0;
/// Other learners' boxes drawn (one shows the bridge is shared; the table
/// lists every one).
const OTHERS_DRAWN: usize = 1;
const TITLE_H: f64 = 40.0;
const LINE: f64 = 26.0;
/// Width of one character of 18-unit monospace text (CJK takes two).
const CHAR_W: f64 = 10.8;

fn n(v: f64) -> String {
    v.to_string()
}

fn text_width(text: &str) -> f64 {
    text.chars()
        .map(|c| if c.is_ascii() { CHAR_W } else { 2.0 * CHAR_W })
        .sum()
}

/// A label on a line, on a background that hides the line behind it.
fn tag(x: f64, y: f64, text: String, class: &'static str) -> Html {
    let w = text_width(&text) + 18.0;
    html! {
        <g class={classes!("topo-tag", class)}>
            <rect x={n(x - w / 2.0)} y={n(y - 16.0)} width={n(w)} height="32" rx="16" />
            <text x={n(x)} y={n(y + 6.5)} text-anchor="middle">{ text }</text>
        </g>
    }
}

/// Bytes per second (once two samples came) with the total so far.
fn flow(arrow: &str, total: u64, rate: Option<f64>) -> String {
    let rate = rate.map_or_else(|| "…".to_owned(), |r| binary_size(r.round() as u64));
    format!("{arrow} {rate}/s ({})", binary_size(total))
}

fn flows(counters: Counters, rate: Option<Rate>) -> (String, String) {
    (
        flow("↓", counters.rx_bytes, rate.map(|r| r.rx)),
        flow("↑", counters.tx_bytes, rate.map(|r| r.tx)),
    )
}

/// One line of a box node, and whether it is the forwarded target.
struct BoxLine {
    text: String,
    strong: bool,
}

fn plain(text: String) -> BoxLine {
    BoxLine {
        text,
        strong: false,
    }
}

/// A box's network namespace: its frame, its title and one line per fact.
fn box_node(
    x: f64,
    w: f64,
    title: &str,
    lines: &[BoxLine],
    this: bool,
    address: Option<String>,
) -> Html {
    let h = TITLE_H + LINE * lines.len() as f64 + 10.0;
    html! {
        <g class={classes!("topology-box", this.then_some("this-box"))}
            data-box-address={address}>
            <rect class="topo-frame" x={n(x)} y={n(BOX_Y)} width={n(w)} height={n(h)} rx="10" />
            <text class="topo-box-title" x={n(x + 12.0)} y={n(BOX_Y + 28.0)}>{ title }</text>
            for (i, line) in lines.iter().enumerate() {
                <text class={classes!("topo-line", line.strong.then_some("is-forwarded"))}
                    x={n(x + 12.0)} y={n(BOX_Y + TITLE_H + 18.0 + LINE * i as f64)}>
                    { &line.text }
                </text>
            }
        </g>
    }
}

/// The facts inside this box: interfaces with their IPv4 addresses and
/// traffic, routes, listening sockets (the forwarded port stands out).
fn this_box_lines(
    lang: Lang,
    network: &NetworkView,
    rates: &NetRates,
    forward: Option<&PortForward>,
) -> Vec<BoxLine> {
    let t = lang.t();
    let mut lines = Vec::new();
    for iface in &network.inside {
        // IPv6 link-local addresses would not fit; the table has them.
        let v4: Vec<&str> = iface
            .addresses
            .iter()
            .map(String::as_str)
            .filter(|a| !a.contains(':'))
            .collect();
        let addresses = if v4.is_empty() {
            t.links_none.to_owned()
        } else {
            v4.join(", ")
        };
        lines.push(plain(format!("{} {addresses}", iface.name)));
        if iface.name != "lo" {
            let (rx, tx) = flows(
                iface.counters,
                rates.get(&Iface::Inside(iface.name.clone())),
            );
            lines.push(plain(rx));
            lines.push(plain(tx));
        }
    }
    for route in &network.routes {
        lines.push(plain(match &route.gateway {
            Some(gateway) => format!("{} via {gateway}", route.destination),
            None => format!("{} dev {}", route.destination, route.device),
        }));
    }
    if network.listening.is_empty() {
        lines.push(plain(t.net_no_listener.to_owned()));
    }
    for socket in &network.listening {
        lines.push(BoxLine {
            text: format!("LISTEN {}:{}", socket.address, socket.port),
            strong: forward.is_some_and(|f| f.box_port == socket.port),
        });
    }
    lines
}

/// Another learner's box: its address and its published port.
fn other_box_lines(port: &BridgePort) -> Vec<BoxLine> {
    let mut lines = vec![plain(port.box_address.clone())];
    if let Some(host_port) = port.host_port {
        lines.push(plain(format!("-p {host_port}:80")));
    }
    lines
}

/// A veth pair as a cable from the bridge down into a box, named by its
/// host end.
fn cable(x: f64, port: &BridgePort, this: bool) -> Html {
    let top = BRIDGE_Y + BRIDGE_H;
    let mark = if port.up { "" } else { " ▽" };
    html! {
        <g class={classes!("topo-cable", this.then_some("is-this"), (!port.up).then_some("is-down"))}
            data-veth={port.veth.clone()}>
            <line x1={n(x)} x2={n(x)} y1={n(top)} y2={n(BOX_Y)} />
            { tag(x, (top + HOST_BOTTOM) / 2.0, format!("{}{mark}", port.veth), "topo-veth") }
        </g>
    }
}

/// A curved arrow from a port node down to this box's cable on the bridge,
/// labelled at its middle.
fn arrow(from: f64, to: f64, label: String, class: &'static str) -> Html {
    let (y0, y1) = (NODE_Y + NODE_H, BRIDGE_Y - 4.0);
    let d = format!(
        "M {from} {y0} C {from} {}, {to} {}, {to} {y1}",
        y0 + 40.0,
        y1 - 40.0
    );
    // The middle of this cubic Bézier curve.
    let (mx, my) = ((from + to) / 2.0, (y0 + y1) / 2.0);
    html! {
        <g class={classes!("topo-arrow", class)}>
            <path d={d} marker-end="url(#topo-arrowhead)" />
            { tag(mx, my, label, "topo-arrow-tag") }
        </g>
    }
}

/// A port node in the host: a title and one line.
fn host_node(x: f64, title: String, line: String, class: &'static str) -> Html {
    html! {
        <g class={classes!("topo-node", class)}>
            <rect x={n(x)} y={n(NODE_Y)} width={n(NODE_W)} height={n(NODE_H)} rx="8" />
            <text class="topo-node-title" x={n(x + 12.0)} y={n(NODE_Y + 27.0)}>{ title }</text>
            <text class="topo-line" x={n(x + 12.0)} y={n(NODE_Y + 55.0)}>{ line }</text>
        </g>
    }
}

fn up_text(lang: Lang, up: bool) -> String {
    let t = lang.t();
    if up {
        format!("▲ {}", t.links_up)
    } else {
        format!("▽ {}", t.links_down)
    }
}

/// The text alternative: every interface with its traffic, then routes,
/// sockets and the forward in words.
fn table(lang: Lang, network: &NetworkView, rates: &NetRates) -> Html {
    let t = lang.t();
    let row = |name: &str,
               place: &str,
               address: String,
               state: String,
               c: Counters,
               rate: Option<Rate>| {
        let (rx, tx) = flows(c, rate);
        html! {
            <tr data-iface={name.to_owned()}>
                <th scope="row" class="mono">{ name }</th>
                <td>{ place }</td>
                <td class="mono">{ address }</td>
                <td>{ state }</td>
                <td class="mono">{ rx }</td>
                <td class="mono">{ tx }</td>
            </tr>
        }
    };
    let bridge = &network.bridge;
    html! {
        <details class="topo-details">
            <summary>{ t.net_table }</summary>
            <p class="topo-summary">{ net_summary(lang, network) }</p>
            <div class="scroll-box">
                <table class="mini-table topo-table">
                    <thead>
                        <tr>
                            <th scope="col">{ t.net_col_device }</th>
                            <th scope="col">{ t.net_col_where }</th>
                            <th scope="col">{ t.net_col_address }</th>
                            <th scope="col">{ t.net_col_state }</th>
                            <th scope="col">{ t.net_col_rx }</th>
                            <th scope="col">{ t.net_col_tx }</th>
                        </tr>
                    </thead>
                    <tbody>
                        { row(&bridge.name, t.net_where_bridge,
                            format!("{} ({})", bridge.address, bridge.mac),
                            up_text(lang, bridge.up), bridge.counters, rates.get(&Iface::Bridge)) }
                        for port in network.ports.iter() {
                            { row(&port.veth,
                                if port.this_box { t.net_where_this_port } else { t.net_where_other_port },
                                port.box_address.clone(), up_text(lang, port.up), port.counters,
                                rates.get(&Iface::Port(port.veth.clone()))) }
                        }
                        for iface in network.inside.iter() {
                            { row(&iface.name, t.net_where_inside, iface.addresses.join(", "),
                                String::new(), iface.counters,
                                rates.get(&Iface::Inside(iface.name.clone()))) }
                        }
                    </tbody>
                </table>
            </div>
            <dl class="topo-facts">
                <div>
                    <dt>{ t.net_routes }</dt>
                    <dd class="mono">
                        for route in network.routes.iter() {
                            <span class="line">
                                { match &route.gateway {
                                    Some(gw) => format!("{} via {gw} dev {}", route.destination, route.device),
                                    None => format!("{} dev {}", route.destination, route.device),
                                } }
                            </span>
                        }
                    </dd>
                </div>
                <div>
                    <dt>{ t.net_listening }</dt>
                    <dd class="mono">
                        if network.listening.is_empty() {
                            <span class="muted">{ t.net_no_listener }</span>
                        }
                        for socket in network.listening.iter() {
                            <span class="line">{ format!("{}:{}", socket.address, socket.port) }</span>
                        }
                    </dd>
                </div>
            </dl>
        </details>
    }
}

/// The box's network as Docker's default bridge network builds it, drawn
/// live: the host with its forwarded port and proxy, the bridge, every box
/// on it by its veth pair, and inside this box its interfaces, routes and
/// sockets. A table under it says the same in text.
#[function_component(NetworkTopology)]
pub fn network_topology(props: &NetworkTopologyProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let network = &props.network;
    let rates = &props.rates;
    let forward = network.forward.as_ref();
    let this_port = network.ports.iter().find(|p| p.this_box);
    let others: Vec<&BridgePort> = network.ports.iter().filter(|p| !p.this_box).collect();
    let hidden = others.len().saturating_sub(OTHERS_DRAWN);

    let this_w = if others.is_empty() {
        RIGHT - LEFT
    } else {
        THIS_W
    };
    let this_x = LEFT + this_w / 2.0;

    let this_lines = this_box_lines(lang, network, rates, forward);
    let other_lines: Vec<Vec<BoxLine>> = others
        .iter()
        .take(OTHERS_DRAWN)
        .map(|p| other_box_lines(p))
        .collect();
    let tallest = other_lines
        .iter()
        .map(Vec::len)
        .chain([this_lines.len()])
        .max()
        .unwrap_or(0);
    let boxes_bottom = BOX_Y + TITLE_H + LINE * tallest as f64 + 10.0;
    let height = boxes_bottom + if hidden > 0 { 40.0 } else { 12.0 };

    let bridge = &network.bridge;
    let (bridge_rx, bridge_tx) = flows(bridge.counters, rates.get(&Iface::Bridge));
    let this_address = this_port
        .map(|p| p.box_address.clone())
        .or_else(|| forward.map(|f| f.box_address.clone()));
    let summary = net_summary(lang, network);

    html! {
        <section class="card" id="network" aria-labelledby="network-title">
            <header class="card-head">
                <h2 id="network-title">{ t.net_topo_title }</h2>
                if rates.get(&Iface::Bridge).is_some() {
                    <span class="live-dot" aria-hidden="true"></span>
                }
            </header>
            <p class="card-caption">{ t.net_topo_caption }</p>
            <figure id="network-topology" class="topology"
                data-ports={network.ports.len().to_string()}
                data-bridge={bridge.name.clone()}
                data-host-port={forward.map(|f| f.host_port.to_string())}>
                <div class="topo-scroll">
                    <svg class="topo-svg" viewBox={format!("0 0 {W} {height}")}
                        role="img" aria-label={summary.clone()}>
                        <title>{ summary }</title>
                        <defs>
                            <marker id="topo-arrowhead" viewBox="0 0 10 10" refX="8" refY="5"
                                markerUnits="userSpaceOnUse" markerWidth="14" markerHeight="14"
                                orient="auto">
                                <path d="M 0 0 L 10 5 L 0 10 z" />
                            </marker>
                        </defs>

                        <rect class="topo-host" x="8" y="8" width={n(W - 16.0)} height={n(HOST_BOTTOM - 8.0)} rx="14" />
                        <text class="topo-host-title" x={n(LEFT)} y="38">{ t.net_host }</text>

                        if let Some(f) = forward {
                            { host_node(LEFT, f.proxy.clone(),
                                format!("{} → {}:{}", t.net_proxy, f.box_address, f.box_port), "topo-proxy") }
                            { host_node(RIGHT - NODE_W, format!("{}:{}", t.net_host_short, f.host_port),
                                format!("DNAT → {}:{}", f.box_address, f.box_port), "topo-dnat") }
                            { arrow(LEFT + NODE_W / 2.0, this_x - 12.0, t.net_proxy.to_owned(), "is-proxy") }
                            { arrow(RIGHT - NODE_W / 2.0, this_x + 12.0, "DNAT".to_owned(), "is-dnat") }
                        } else {
                            <text class="topo-muted" x={n(LEFT)} y={n(NODE_Y + 38.0)}>{ t.net_no_forward }</text>
                        }

                        <g class="topo-bridge" data-up={bridge.up.to_string()}>
                            <rect x={n(LEFT)} y={n(BRIDGE_Y)} width={n(RIGHT - LEFT)} height={n(BRIDGE_H)} rx="8" />
                            <text class="topo-node-title" x={n(LEFT + 12.0)} y={n(BRIDGE_Y + 27.0)}>
                                { format!("{} {} · {} · {}", t.net_bridge, bridge.name, bridge.address, up_text(lang, bridge.up)) }
                            </text>
                            <text class="topo-line" x={n(LEFT + 12.0)} y={n(BRIDGE_Y + 55.0)}>
                                { format!("{bridge_rx}  {bridge_tx}") }
                            </text>
                        </g>

                        if let Some(port) = this_port {
                            { cable(this_x, port, true) }
                        }
                        for port in others.iter().take(OTHERS_DRAWN) {
                            { cable((OTHER_X + RIGHT) / 2.0, port, false) }
                        }

                        { box_node(LEFT, this_w, t.net_this_box, &this_lines, true, this_address) }
                        for (port, lines) in others.iter().zip(&other_lines) {
                            { box_node(OTHER_X, RIGHT - OTHER_X, t.net_other_box, lines, false,
                                Some(port.box_address.clone())) }
                        }
                        if hidden > 0 {
                            <text class="topo-muted" x={n(RIGHT)} y={n(boxes_bottom + 26.0)}
                                text-anchor="end">{ net_more_boxes(lang, hidden) }</text>
                        }
                    </svg>
                </div>
                <figcaption class="topo-legend">
                    <span>{ t.net_legend_cable }</span>
                    <span>{ t.net_legend_rates }</span>
                </figcaption>
                { table(lang, network, rates) }
            </figure>
        </section>
    }
}
