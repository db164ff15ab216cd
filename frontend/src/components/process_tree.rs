use damda_protocol::ProcessTree as Tree;
use yew::prelude::*;

use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct ProcessTreeProps {
    pub lang: Lang,
    pub tree: Tree,
}

/// The box's processes as the host lists them (every NSpid), next to what
/// `ps` inside the box lists: the whole host until the box has its own /proc.
#[function_component(ProcessTree)]
pub fn process_tree(props: &ProcessTreeProps) -> Html {
    let t = props.lang.t();
    let tree = &props.tree;
    let more = tree.box_total.saturating_sub(tree.box_view.len());
    html! {
        <section class="card" id="process-tree" aria-labelledby="tree-title"
            data-box-total={tree.box_total.to_string()}>
            <header class="card-head">
                <h2 id="tree-title">{ t.tree_title }</h2>
            </header>
            <div class="two-up">
                <div>
                    <h3 class="sub-head">{ t.tree_host }</h3>
                    <table class="mini-table">
                        <thead>
                            <tr>
                                <th scope="col">{ t.tree_nspid }</th>
                                <th scope="col">{ "PPID" }</th>
                                <th scope="col">{ "comm" }</th>
                            </tr>
                        </thead>
                        <tbody>
                            for row in tree.host_view.iter() {
                                <tr>
                                    <td class="mono">
                                        { row.nspid.iter().map(u32::to_string).collect::<Vec<_>>().join(" → ") }
                                    </td>
                                    <td class="mono">{ row.ppid }</td>
                                    <td class="mono">{ &row.comm }</td>
                                </tr>
                            }
                        </tbody>
                    </table>
                </div>
                <div>
                    <h3 class="sub-head">
                        { t.tree_box }
                        <span class="sub-count">{ format!(" · {} {}", t.tree_total, tree.box_total) }</span>
                    </h3>
                    <div class="scroll-box">
                    <table class="mini-table">
                        <thead>
                            <tr>
                                <th scope="col">{ "PID" }</th>
                                <th scope="col">{ "comm" }</th>
                            </tr>
                        </thead>
                        <tbody>
                            for row in tree.box_view.iter() {
                                <tr>
                                    <td class="mono">{ row.pid }</td>
                                    <td class="mono">{ &row.comm }</td>
                                </tr>
                            }
                        </tbody>
                    </table>
                    </div>
                    if more > 0 {
                        <p class="empty">{ format!("… {more}{}", t.tree_more) }</p>
                    }
                </div>
            </div>
        </section>
    }
}
