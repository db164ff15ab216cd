use damda_protocol::HostSetting;
use yew::prelude::*;

use crate::components::command_line::CommandLine;
use crate::i18n::{net_chain_text, Lang};

#[derive(PartialEq, Properties)]
pub struct NetworkRulesProps {
    pub lang: Lang,
    /// `nft list table ip damda`.
    pub rules: Option<String>,
    /// The bridge's name, for the commands that let its traffic through.
    pub bridge: String,
    pub host_settings: Vec<HostSetting>,
    pub forward_drops: Vec<String>,
}

/// The chains of damda's table, in the order a forwarded packet meets them.
const CHAINS: [&str; 4] = ["prerouting", "output", "forward", "postrouting"];

/// An iptables rule that accepts forwarded packets in (`-i`) or out (`-o`)
/// of the bridge, ahead of a drop policy.
fn allow(direction: &str, bridge: &str) -> String {
    format!("iptables -I FORWARD {direction} {bridge} -j ACCEPT")
}

/// damda's nftables table as the kernel lists it, what each chain does, the
/// host-wide settings it changed, and other tables that would drop what it
/// forwards.
#[function_component(NetworkRules)]
pub fn network_rules(props: &NetworkRulesProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let rules = props.rules.as_deref();
    html! {
        <section class="card" id="network-rules" aria-labelledby="network-rules-title"
            data-forward-drops={props.forward_drops.len().to_string()}>
            <header class="card-head">
                <h2 id="network-rules-title">{ t.net_rules_title }</h2>
            </header>
            <p class="card-caption">{ t.net_rules_caption }</p>

            if !props.forward_drops.is_empty() {
                <div class="net-drops" role="note" id="network-forward-drops">
                    <p class="net-drops-title">
                        <span class="ico" aria-hidden="true">{ "⚠" }</span>{ t.net_drops_title }
                    </p>
                    <ul class="mono">
                        for chain in props.forward_drops.iter() {
                            <li>{ chain }</li>
                        }
                    </ul>
                    <p>{ t.net_drops_why }</p>
                    <p>{ t.net_drops_fix }</p>
                    for direction in ["-i", "-o"] {
                        <CommandLine {lang} text={allow(direction, &props.bridge)} />
                    }
                </div>
            }

            if let Some(rules) = rules {
                <pre class="net-rules scroll-box"><code>{ rules }</code></pre>
            } else {
                <p class="empty">{ t.net_rules_none }</p>
            }

            <h3 class="sub-head">{ t.net_chains }</h3>
            <dl class="net-chains">
                for chain in CHAINS {
                    // Marked when the listing has it, so the explanation
                    // points at something on screen.
                    <div data-chain={chain}
                        data-present={rules.is_some_and(|r| r.contains(&format!("chain {chain} "))).to_string()}>
                        <dt><code>{ chain }</code></dt>
                        <dd>{ net_chain_text(lang, chain) }</dd>
                    </div>
                }
                <div data-chain="proxy">
                    <dt><code>{ "127.0.0.1" }</code></dt>
                    <dd>{ t.net_proxy_note }</dd>
                </div>
            </dl>

            if !props.host_settings.is_empty() {
                <h3 class="sub-head">{ t.net_settings }</h3>
                <table class="mini-table net-settings">
                    <thead>
                        <tr>
                            <th scope="col">{ t.net_col_name }</th>
                            <th scope="col">{ t.net_col_now }</th>
                            <th scope="col">{ t.net_col_before }</th>
                            <th scope="col"></th>
                        </tr>
                    </thead>
                    <tbody>
                        for setting in props.host_settings.iter() {
                            <tr data-setting={setting.name.clone()}
                                data-changed={setting.before.is_some().to_string()}>
                                // Long sysctl names break only after a dot.
                                <th scope="row" class="mono">
                                    for part in setting.name.split_inclusive('.') {
                                        { part }<wbr />
                                    }
                                </th>
                                <td class="mono">{ &setting.value }</td>
                                <td class="mono">{ setting.before.as_deref().unwrap_or("—") }</td>
                                <td>
                                    if setting.before.is_some() {
                                        <span class="badge badge-restore">
                                            <span class="ico" aria-hidden="true">{ "↺" }</span>
                                            { t.net_changed }
                                        </span>
                                    } else {
                                        <span class="muted">{ t.net_unchanged }</span>
                                    }
                                </td>
                            </tr>
                        }
                    </tbody>
                </table>
            }
        </section>
    }
}
