use yew::prelude::*;

use crate::i18n::Lang;
use crate::state::Connection;

#[derive(PartialEq, Properties)]
pub struct ConnectionStatusProps {
    pub lang: Lang,
    pub connection: Connection,
    pub session: Option<String>,
}

/// A dot, a word and (when closed) the seconds to the next attempt.
#[function_component(ConnectionStatus)]
pub fn connection_status(props: &ConnectionStatusProps) -> Html {
    let t = props.lang.t();
    let (state, icon, text) = match props.connection {
        Connection::Connecting => ("connecting", "◌", t.conn_connecting.to_owned()),
        Connection::Open => ("open", "●", t.conn_open.to_owned()),
        Connection::Closed { retry_in_ms } => {
            let seconds = retry_in_ms.div_ceil(1000);
            let text = format!("{} · {seconds}{}", t.conn_closed, t.conn_retry_in);
            ("closed", "✕", text)
        }
    };
    let title = props
        .session
        .as_ref()
        .map(|id| format!("{} {id}", t.session));
    html! {
        <p class="conn" data-connection={state} role="status" aria-live="polite" {title}>
            <span class="conn-icon" aria-hidden="true">{ icon }</span>
            <span class="conn-text">{ text }</span>
        </p>
    }
}
