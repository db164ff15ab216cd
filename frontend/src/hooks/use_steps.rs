//! Loads the lesson order once the server is reachable.

use yew::prelude::*;

use crate::api;
use crate::state::{Action, State};

/// Fetches `GET /api/steps` whenever `wanted` turns true (the list is missing
/// and the socket is open, so a failed first try is retried on reconnect).
#[hook]
pub fn use_steps(wanted: bool, dispatch: UseReducerDispatcher<State>) {
    use_effect_with(wanted, move |wanted| {
        if *wanted {
            wasm_bindgen_futures::spawn_local(async move {
                match api::steps().await {
                    Ok(steps) => dispatch.dispatch(Action::StepsLoaded(steps)),
                    Err(e) => gloo::console::warn!(format!("damda: steps: {e}")),
                }
            });
        }
    });
}
