//! The websocket to the server: connects, resumes this tab's box, reconnects
//! with backoff, and hands every server message to the page.
//!
//! One task owns the socket for the component's whole life. Unmounting aborts
//! the task, which drops the socket; gloo's socket removes its own listeners
//! when dropped, so no callback outlives the component.

use std::cell::RefCell;
use std::rc::Rc;

use damda_protocol::{ClientMessage, ServerMessage, Snapshot};
use futures::channel::mpsc::{self, UnboundedSender};
use futures::future::{self, AbortHandle, Abortable, Either};
use futures::{SinkExt, StreamExt};
use gloo::console;
use gloo::net::websocket::futures::WebSocket;
use gloo::net::websocket::Message;
use gloo::timers::future::TimeoutFuture;
use yew::prelude::*;

/// Where the tab keeps its session id, so a reload finds its box.
pub const SESSION_KEY: &str = "damda.session";

/// What the socket tells the page.
pub enum SocketEvent {
    Connecting,
    /// The server spoke on a new connection.
    Open,
    /// The connection is gone; the next attempt starts in `retry_in_ms`.
    Closed {
        retry_in_ms: u32,
    },
    Message(ServerMessage),
}

type Outbox = Rc<RefCell<Option<UnboundedSender<ClientMessage>>>>;

/// Sends messages on the current connection.
#[derive(Clone)]
pub struct SocketHandle {
    outbox: Outbox,
}

impl SocketHandle {
    /// Queues `message` on the open connection; false when there is none.
    pub fn send(&self, message: ClientMessage) -> bool {
        match self.outbox.borrow().as_ref() {
            Some(tx) => tx.unbounded_send(message).is_ok(),
            None => false,
        }
    }
}

impl PartialEq for SocketHandle {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.outbox, &other.outbox)
    }
}

#[hook]
pub fn use_damda_socket(on_event: Callback<SocketEvent>) -> SocketHandle {
    // The task always calls the latest callback the component rendered with.
    let latest = use_mut_ref(|| on_event.clone());
    *latest.borrow_mut() = on_event;
    let outbox: Outbox = use_mut_ref(|| None);

    {
        let outbox = outbox.clone();
        use_effect_with((), move |_| {
            let (abort, registration) = AbortHandle::new_pair();
            let emit = move |event: SocketEvent| {
                // Clone first: emitting may re-render, which replaces `latest`.
                let callback = latest.borrow().clone();
                callback.emit(event);
            };
            let task = Abortable::new(run(emit, outbox.clone()), registration);
            wasm_bindgen_futures::spawn_local(async move {
                let _ = task.await;
            });
            move || {
                abort.abort();
                outbox.borrow_mut().take();
            }
        });
    }

    SocketHandle { outbox }
}

/// Connects again and again for as long as the page lives.
async fn run(emit: impl Fn(SocketEvent), outbox: Outbox) {
    let mut failures: u32 = 0;
    loop {
        emit(SocketEvent::Connecting);
        let spoke = match WebSocket::open(&socket_url()) {
            Ok(ws) => connection(ws, &emit, &outbox).await,
            Err(e) => {
                console::warn!(format!("damda: cannot open the websocket: {e}"));
                false
            }
        };
        outbox.borrow_mut().take();
        // After a connection that worked, try again soon; after failures,
        // back off: 1 s, 2 s, 4 s, 8 s, then every 10 s.
        failures = if spoke { 1 } else { failures.saturating_add(1) };
        let mut left = backoff_ms(failures);
        while left > 0 {
            emit(SocketEvent::Closed { retry_in_ms: left });
            let tick = left.min(1000);
            TimeoutFuture::new(tick).await;
            left -= tick;
        }
    }
}

fn backoff_ms(failures: u32) -> u32 {
    (500u32 << failures.min(5)).min(10_000)
}

/// `ws://` or `wss://` to `/ws` on the page's own host.
fn socket_url() -> String {
    let location = gloo::utils::window().location();
    let scheme = match location.protocol().as_deref() {
        Ok("https:") => "wss",
        _ => "ws",
    };
    let host = location.host().unwrap_or_default();
    format!("{scheme}://{host}/ws")
}

fn stored_session() -> Option<String> {
    gloo::utils::window()
        .session_storage()
        .ok()
        .flatten()?
        .get_item(SESSION_KEY)
        .ok()
        .flatten()
        .filter(|id| !id.is_empty())
}

fn store_session(id: &str) {
    if let Ok(Some(storage)) = gloo::utils::window().session_storage() {
        let _ = storage.set_item(SESSION_KEY, id);
    }
}

/// While a resume is in flight, the fresh box the server greets every
/// connection with is held back, so the page does not flash it before the
/// old box returns. If the resume is refused, the fresh box is shown after all.
struct ResumeGate {
    pending: Option<String>,
    held: Option<Box<Snapshot>>,
}

impl ResumeGate {
    fn pass(&mut self, message: ServerMessage, emit: &impl Fn(SocketEvent)) {
        match message {
            ServerMessage::Session { id } => {
                store_session(&id);
                if self.pending.as_deref() == Some(id.as_str()) {
                    self.pending = None;
                    self.held = None;
                }
                emit(SocketEvent::Message(ServerMessage::Session { id }));
            }
            ServerMessage::Snapshot(snapshot) if self.pending.is_some() => {
                self.held = Some(snapshot);
            }
            error @ ServerMessage::Error { .. } if self.pending.is_some() => {
                self.pending = None;
                if let Some(snapshot) = self.held.take() {
                    emit(SocketEvent::Message(ServerMessage::Snapshot(snapshot)));
                }
                emit(SocketEvent::Message(error));
            }
            other => emit(SocketEvent::Message(other)),
        }
    }
}

/// One connection, until it closes. Returns whether the server spoke.
async fn connection(ws: WebSocket, emit: &impl Fn(SocketEvent), outbox: &Outbox) -> bool {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded::<ClientMessage>();

    // Read the old id before the server's greeting overwrites it.
    let mut gate = ResumeGate {
        pending: stored_session(),
        held: None,
    };
    if let Some(old) = &gate.pending {
        let _ = tx.unbounded_send(ClientMessage::Resume {
            session: old.clone(),
        });
    }
    *outbox.borrow_mut() = Some(tx);

    let mut spoke = false;
    loop {
        match future::select(stream.next(), rx.next()).await {
            Either::Left((incoming, _)) => match incoming {
                Some(Ok(Message::Text(text))) => {
                    if !spoke {
                        spoke = true;
                        emit(SocketEvent::Open);
                    }
                    match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(message) => gate.pass(message, emit),
                        Err(e) => console::warn!(format!("damda: unreadable message: {e}")),
                    }
                }
                Some(Ok(Message::Bytes(_))) => {}
                // An error event; the close that follows ends the stream.
                Some(Err(_)) => {}
                None => break,
            },
            Either::Right((outgoing, _)) => match outgoing {
                Some(message) => {
                    let Ok(text) = serde_json::to_string(&message) else {
                        continue;
                    };
                    if sink.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    spoke
}
