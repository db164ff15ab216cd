use std::rc::Rc;

use damda_protocol::{NsKind, NsPair, Snapshot};
use yew::prelude::*;

use crate::components::namespace_diagram::NamespaceDiagram;
use crate::i18n::{ns_what, Lang};

#[derive(PartialEq, Properties)]
pub struct NamespaceMapProps {
    pub lang: Lang,
    pub snapshot: Rc<Snapshot>,
    pub previous: Option<Rc<Snapshot>>,
}

/// Whether a namespace row changed since the previous snapshot: it became
/// shared or separate, or (on the same box) the box moved to another
/// namespace of that type. A rebuilt box has new inodes everywhere it is
/// separate; that alone is not news.
pub(crate) fn changed(now: NsPair, before: Option<NsPair>, rebuilt: bool) -> bool {
    match before {
        None => false,
        Some(before) => {
            now.is_shared() != before.is_shared() || (!rebuilt && now.boxed != before.boxed)
        }
    }
}

/// The eight namespace types: host inode, box inode, shared or separate.
#[function_component(NamespaceMap)]
pub fn namespace_map(props: &NamespaceMapProps) -> Html {
    let t = props.lang.t();
    let snapshot = &props.snapshot;
    let separate = NsKind::ALL
        .iter()
        .filter(|k| !snapshot.namespaces.get(**k).is_shared())
        .count();

    let rows = NsKind::ALL.iter().map(|&kind| {
        let pair = snapshot.namespaces.get(kind);
        let before = props.previous.as_ref().map(|p| p.namespaces.get(kind));
        let shared = pair.is_shared();
        let changed = changed(pair, before, snapshot.rebuilt);
        let name = kind.proc_name();
        html! {
            <tr key={name}
                class={classes!("ns-row", (!shared).then_some("is-separate"), changed.then_some("is-changed"))}
                data-ns={name}
                data-shared={shared.to_string()}
                data-changed={changed.then_some("true")}>
                <th scope="row" class="ns-name">
                    <div class="ns-name-in">
                        <code>{ name }</code>
                        <span class="ns-what">{ ns_what(props.lang, kind) }</span>
                    </div>
                </th>
                <td class="ns-inode mono" data-side="host">{ pair.host }</td>
                <td class={classes!("ns-inode", "mono", (!shared).then_some("differs"))} data-side="box">
                    { pair.boxed }
                </td>
                <td class="ns-status">
                    <div class="ns-status-in">
                        if shared {
                            <span class="pill pill-shared">
                                <span class="ico" aria-hidden="true">{ "○" }</span>{ t.ns_shared }
                            </span>
                        } else {
                            <span class="pill pill-separate">
                                <span class="ico" aria-hidden="true">{ "◆" }</span>{ t.ns_separate }
                            </span>
                        }
                        if changed {
                            <span class="badge badge-changed">
                                <span class="ico" aria-hidden="true">{ "★" }</span>{ t.just_changed }
                            </span>
                        }
                    </div>
                </td>
            </tr>
        }
    });

    html! {
        <section class="card" id="namespace-map" aria-labelledby="ns-title">
            <header class="card-head">
                <h2 id="ns-title">{ t.ns_title }</h2>
                <p class="card-count" data-separate={separate.to_string()}>
                    { format!("{} ", t.ns_separate_count) }
                    <strong>{ format!("{separate} / {}", NsKind::ALL.len()) }</strong>
                </p>
            </header>
            <NamespaceDiagram lang={props.lang} snapshot={snapshot.clone()} previous={props.previous.clone()} />
            <p class="card-caption">{ t.ns_caption }</p>
            <table class="ns-table">
                <thead>
                    <tr>
                        <th scope="col">
                            { t.ns_col_type }<span class="th-sub">{ " · " }{ t.ns_col_what }</span>
                        </th>
                        <th scope="col" class="num">{ t.ns_col_host }</th>
                        <th scope="col" class="num">{ t.ns_col_box }</th>
                        <th scope="col" class="ns-status-col">{ t.ns_col_status }</th>
                    </tr>
                </thead>
                <tbody>
                    { for rows }
                </tbody>
            </table>
        </section>
    }
}
