use yew::prelude::*;

use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct BusyIndicatorProps {
    pub lang: Lang,
    /// The server's message for the replay in progress.
    pub message: String,
}

/// Shown while the server rebuilds the box and replays steps.
#[function_component(BusyIndicator)]
pub fn busy_indicator(props: &BusyIndicatorProps) -> Html {
    let text = if props.message.is_empty() {
        props.lang.t().busy_default.to_owned()
    } else {
        props.message.clone()
    };
    html! {
        <div id="busy" class="busy" role="status" aria-live="polite">
            <span class="spinner" aria-hidden="true"></span>
            <span class="busy-text">{ text }</span>
        </div>
    }
}
