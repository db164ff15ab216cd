use std::rc::Rc;

use damda_protocol::Snapshot;
use yew::prelude::*;

use crate::components::command_line::CommandLine;
use crate::components::copy_button::CopyButton;
use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct CommandsPanelProps {
    pub lang: Lang,
    pub snapshot: Rc<Snapshot>,
}

/// The step by hand: shell commands to copy, and the system calls made.
#[function_component(CommandsPanel)]
pub fn commands_panel(props: &CommandsPanelProps) -> Html {
    let t = props.lang.t();
    let commands = &props.snapshot.commands;
    let syscalls = &props.snapshot.syscalls;
    let all = commands
        .iter()
        .map(|c| c.shell.as_str())
        .collect::<Vec<_>>()
        .join("\n");

    html! {
        <section class="card" id="commands-panel" aria-labelledby="cmds-title">
            <header class="card-head">
                <h2 id="cmds-title">{ t.cmds_panel }</h2>
            </header>
            <div class="sub-head-row">
                <h3 class="sub-head">{ t.cmds_title }</h3>
                if commands.len() > 1 {
                    <CopyButton lang={props.lang} text={all} label={Some(t.copy_all)} />
                }
            </div>
            <p class="card-caption">{ t.cmds_caption }</p>
            if commands.is_empty() {
                <p class="empty">{ t.nothing_here }</p>
            } else {
                <ol class="cmd-list">
                    for command in commands.iter() {
                        <CommandLine lang={props.lang} text={command.shell.clone()} item=true />
                    }
                </ol>
            }
            <h3 class="sub-head">{ t.syscalls_title }</h3>
            if syscalls.is_empty() {
                <p class="empty">{ t.nothing_here }</p>
            } else {
                <ol class="syscall-list">
                    for call in syscalls.iter() {
                        <li><code class="syscall">{ &call.call }</code></li>
                    }
                </ol>
            }
        </section>
    }
}
