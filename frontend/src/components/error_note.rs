use damda_protocol::ErrorCode;
use yew::prelude::*;

#[derive(PartialEq, Properties)]
pub struct ErrorNoteProps {
    pub id: AttrValue,
    /// What was refused, in the page's words.
    pub title: AttrValue,
    /// The server's reason.
    pub message: AttrValue,
    /// The code to show beside the title (`data-code`), where it tells the
    /// learner something.
    #[prop_or_default]
    pub code: Option<ErrorCode>,
}

/// A form's refusal from the server, shown next to the form (the banner is
/// for the rest).
#[function_component(ErrorNote)]
pub fn error_note(props: &ErrorNoteProps) -> Html {
    let code = props.code.map(ErrorCode::as_str);
    html! {
        <div id={props.id.clone()} class="error-note" role="alert" data-code={code}>
            <span class="ico" aria-hidden="true">{ "⚠" }</span>
            <div>
                <p class="error-note-title">
                    <strong>{ &props.title }</strong>
                    if let Some(code) = code {
                        <code class="banner-code">{ code }</code>
                    }
                </p>
                <p class="error-note-message">{ &props.message }</p>
            </div>
        </div>
    }
}
