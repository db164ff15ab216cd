use yew::prelude::*;

use crate::components::copy_button::CopyButton;
use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct CommandLineProps {
    pub lang: Lang,
    /// What to run, as copied.
    pub text: AttrValue,
    /// A script of many lines: no prompt mark before the first.
    #[prop_or_default]
    pub script: bool,
    /// An item of a list of commands (`li`) rather than a block (`div`).
    #[prop_or_default]
    pub item: bool,
    #[prop_or_default]
    pub id: Option<AttrValue>,
}

/// A command to type in a shell, with a button that copies it.
#[function_component(CommandLine)]
pub fn command_line(props: &CommandLineProps) -> Html {
    let tag = if props.item { "li" } else { "div" };
    html! {
        <@{tag} class="cmd" id={props.id.clone()}>
            <pre class={classes!("cmd-shell", props.script.then_some("is-script"))}>
                <code>{ props.text.trim_end() }</code>
            </pre>
            <CopyButton lang={props.lang} text={props.text.clone()} />
        </@>
    }
}
