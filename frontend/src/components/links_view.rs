use damda_protocol::LinkState;
use yew::prelude::*;

use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct LinksViewProps {
    pub lang: Lang,
    pub links: Vec<LinkState>,
}

/// The network devices the box sees, up or down, with their addresses.
#[function_component(LinksView)]
pub fn links_view(props: &LinksViewProps) -> Html {
    let t = props.lang.t();
    html! {
        <section class="card" id="links" aria-labelledby="links-title"
            data-count={props.links.len().to_string()}>
            <header class="card-head">
                <h2 id="links-title">{ t.links_title }</h2>
                <p class="card-count"><strong>{ props.links.len() }</strong></p>
            </header>
            <table class="mini-table">
                <tbody>
                    for link in props.links.iter() {
                        <tr data-link={link.name.clone()} data-up={link.up.to_string()}>
                            <th scope="row" class="mono">{ &link.name }</th>
                            <td>
                                if link.up {
                                    <span class="pill pill-separate">
                                        <span class="ico" aria-hidden="true">{ "▲" }</span>{ t.links_up }
                                    </span>
                                } else {
                                    <span class="pill pill-shared">
                                        <span class="ico" aria-hidden="true">{ "▽" }</span>{ t.links_down }
                                    </span>
                                }
                            </td>
                            <td class="mono">
                                if link.addresses.is_empty() {
                                    <span class="muted">{ t.links_none }</span>
                                }
                                for address in link.addresses.iter() {
                                    <span class="line">{ address }</span>
                                }
                            </td>
                        </tr>
                    }
                </tbody>
            </table>
        </section>
    }
}
