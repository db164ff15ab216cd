//! ArrowRight = next, ArrowLeft = back, anywhere on the page except while
//! typing or with a modifier held, and only while `enabled` (the steps are
//! on screen).

use gloo::events::{EventListener, EventListenerOptions};
use wasm_bindgen::JsCast;
use web_sys::{HtmlElement, KeyboardEvent};
use yew::prelude::*;

#[hook]
pub fn use_arrow_keys(enabled: bool, on_back: Callback<()>, on_next: Callback<()>) {
    let latest = use_mut_ref(|| None);
    *latest.borrow_mut() = enabled.then_some((on_back, on_next));

    use_effect_with((), move |_| {
        // Not passive (gloo's default): the page must not also scroll
        // sideways when an arrow key steps.
        let options = EventListenerOptions::enable_prevent_default();
        let window = gloo::utils::window();
        let listener = EventListener::new_with_options(&window, "keydown", options, move |event| {
            let Some(event) = event.dyn_ref::<KeyboardEvent>() else {
                return;
            };
            if event.alt_key() || event.ctrl_key() || event.meta_key() || event.shift_key() {
                return;
            }
            if event.repeat() || event.default_prevented() || typing_in(event) {
                return;
            }
            let Some((on_back, on_next)) = latest.borrow().clone() else {
                return;
            };
            let callback = match event.key().as_str() {
                "ArrowRight" => on_next,
                "ArrowLeft" => on_back,
                _ => return,
            };
            event.prevent_default();
            callback.emit(());
        });
        // Dropping the listener removes it.
        move || drop(listener)
    });
}

fn typing_in(event: &KeyboardEvent) -> bool {
    let Some(element) = event
        .target()
        .and_then(|t| t.dyn_into::<HtmlElement>().ok())
    else {
        return false;
    };
    matches!(element.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT")
        || element.is_content_editable()
}
