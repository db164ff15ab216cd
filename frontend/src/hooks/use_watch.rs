//! Live usage only while someone can see it: the server samples the box's
//! cgroup about once a second while the page watches, and stops when the
//! tab is hidden.

use damda_protocol::ClientMessage;
use gloo::events::EventListener;
use yew::prelude::*;

use crate::hooks::use_damda_socket::SocketHandle;

/// Sends `watch` with `on: false` when the document becomes hidden and
/// `on: true` when it is visible again. Every connection starts watched, so
/// a connection that opens while the page is hidden is told at once.
#[hook]
pub fn use_watch(socket: SocketHandle, open: bool) {
    let latest = use_mut_ref(|| socket.clone());
    *latest.borrow_mut() = socket;

    {
        let latest = latest.clone();
        use_effect_with(open, move |&open| {
            if open && gloo::utils::document().hidden() {
                latest.borrow().send(ClientMessage::Watch { on: false });
            }
        });
    }

    use_effect_with((), move |_| {
        let document = gloo::utils::document();
        let listener = EventListener::new(&document, "visibilitychange", move |_| {
            let on = !gloo::utils::document().hidden();
            latest.borrow().send(ClientMessage::Watch { on });
        });
        // Dropping the listener removes it.
        move || drop(listener)
    });
}
