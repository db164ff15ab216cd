use damda_protocol::IpcProbe as Probe;
use yew::prelude::*;

use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct IpcProbeProps {
    pub lang: Lang,
    pub probe: Probe,
}

/// Whether the message queue damda made on the host shows inside the box.
#[function_component(IpcProbe)]
pub fn ipc_probe(props: &IpcProbeProps) -> Html {
    let t = props.lang.t();
    let p = &props.probe;
    let seen = |visible: bool| {
        if visible {
            html! { <span class="pill pill-shared"><span class="ico" aria-hidden="true">{ "●" }</span>{ t.visible }</span> }
        } else {
            html! { <span class="pill pill-separate"><span class="ico" aria-hidden="true">{ "⊘" }</span>{ t.not_visible }</span> }
        }
    };
    html! {
        <section class="card" id="ipc-probe" aria-labelledby="ipc-title"
            data-on-host={p.on_host.to_string()} data-in-box={p.in_box.to_string()}>
            <header class="card-head">
                <h2 id="ipc-title">{ t.ipc_title }</h2>
            </header>
            <p class="card-caption">{ t.ipc_caption }</p>
            <table class="mini-table">
                <tbody>
                    <tr>
                        <th scope="row">{ t.ipc_on_host }</th>
                        <td class="mono">{ &p.name }</td>
                        <td>{ seen(p.on_host) }</td>
                    </tr>
                    <tr>
                        <th scope="row">{ t.ipc_in_box }</th>
                        <td class="mono">{ &p.name }</td>
                        <td>{ seen(p.in_box) }</td>
                    </tr>
                </tbody>
            </table>
        </section>
    }
}
