use std::rc::Rc;

use damda_protocol::Comparison;
use yew::prelude::*;

use crate::components::command_line::CommandLine;
use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct CompareCommandsProps {
    pub lang: Lang,
    pub comparison: Rc<Comparison>,
}

/// Folded away: the workload both sides ran, and how to run each side by
/// hand, each with a copy button.
#[function_component(CompareCommands)]
pub fn compare_commands(props: &CompareCommandsProps) -> Html {
    let t = props.lang.t();
    let c = &props.comparison;
    let blocks = [
        ("compare-workload", t.cmp_workload, &c.workload),
        ("compare-vm-command", t.cmp_vm_command, &c.vm_command),
        (
            "compare-container-command",
            t.cmp_container_command,
            &c.container_command,
        ),
    ];
    html! {
        <details id="compare-commands" class="cg-other compare-commands">
            <summary>{ t.cmp_by_hand }</summary>
            for (id, title, text) in blocks {
                <div {id} class="compare-command">
                    <h3 class="sub-head">{ title }</h3>
                    <CommandLine lang={props.lang} text={text.clone()} script=true />
                </div>
            }
        </details>
    }
}
