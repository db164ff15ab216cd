use yew::prelude::*;

#[derive(PartialEq, Properties)]
pub struct PendingLineProps {
    pub id: AttrValue,
    /// What is being done (`Asking about`).
    pub text: AttrValue,
    /// What it is being done to: a path, a name.
    pub subject: AttrValue,
    /// Said after the subject.
    #[prop_or_default]
    pub children: Html,
}

/// A request on its way to the server: a spinner, what was asked and about
/// what.
#[function_component(PendingLine)]
pub fn pending_line(props: &PendingLineProps) -> Html {
    html! {
        <p id={props.id.clone()} class="pending-line">
            <span class="spinner" aria-hidden="true"></span>
            { format!("{} ", props.text) }<code>{ &props.subject }</code>
            { props.children.clone() }
        </p>
    }
}
