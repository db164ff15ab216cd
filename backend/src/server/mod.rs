//! `damda serve`: the HTTP API, the websocket, and the page.

pub mod guard;
pub mod registry;
pub mod session;

use crate::engine::Engine;
use crate::lessons;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use guard::{tokens_in, Allowlist};
use registry::Registry;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tower_http::services::{ServeDir, ServeFile};

/// The websocket's own limits. Messages up to this size are read and, if
/// larger than the protocol's limit, answered with a clear error while the
/// connection stays; anything larger closes the connection (1009).
const WS_MAX_MESSAGE: usize = 64 * 1024;
const WS_WRITE_BUFFER: usize = 64 * 1024;
const WS_MAX_WRITE_BUFFER: usize = 1024 * 1024;

pub struct ServeOptions {
    pub listen: SocketAddr,
    pub web_dir: PathBuf,
    pub allow_hosts: Vec<String>,
    pub token: Option<String>,
    pub max_boxes: usize,
    pub grace: Duration,
}

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    allowlist: Arc<Allowlist>,
    /// The terminal is served to loopback only, until classroom mode has
    /// per-learner sandboxes.
    terminal_allowed: bool,
}

async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let query = request.uri().query();
    let tokens = tokens_in(query, text(header::COOKIE));
    if let Err(refusal) = state
        .allowlist
        .check(text(header::HOST), text(header::ORIGIN), &tokens)
    {
        tracing::warn!("refused {}: {refusal}", request.uri().path());
        return (StatusCode::FORBIDDEN, refusal.to_string()).into_response();
    }
    // A token that came in the URL is kept in a cookie for the websocket.
    let new_cookie = tokens_in(query, None)
        .first()
        .map(|token| format!("damda_token={token}; Path=/; HttpOnly; SameSite=Strict"));
    let mut response = next.run(request).await;
    if let Some(cookie) = new_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn steps() -> Json<Vec<damda_protocol::StepInfo>> {
    Json(lessons::step_infos())
}

async fn lesson(Path((lang, id)): Path<(String, String)>) -> Response {
    match lessons::lesson(&lang, &id) {
        Some(lesson) => Json(lesson).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no lesson {lang}/{id}")).into_response(),
    }
}

async fn glossary(Path((name, lang)): Path<(String, String)>) -> Response {
    match lessons::glossary(&name, &lang) {
        Some(table) => Json(table).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no table {name}/{lang}")).into_response(),
    }
}

async fn errno(Path(lang): Path<String>) -> Response {
    glossary(Path(("errno".to_owned(), lang))).await
}

async fn websocket(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .max_message_size(WS_MAX_MESSAGE)
        .max_frame_size(WS_MAX_MESSAGE)
        .write_buffer_size(WS_WRITE_BUFFER)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            let (writer, reader) = socket.split();
            session::serve_connection(state.registry, state.terminal_allowed, writer, reader).await;
        })
}

async fn page_missing() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the page has not been built: run scripts/setup.sh (it runs trunk build)",
    )
        .into_response()
}

pub fn router(
    registry: Arc<Registry>,
    allowlist: Allowlist,
    web_dir: PathBuf,
    terminal_allowed: bool,
) -> Router {
    let state = AppState {
        registry,
        allowlist: Arc::new(allowlist),
        terminal_allowed,
    };
    let index = web_dir.join("index.html");
    let api = Router::new()
        .route("/api/health", get(health))
        .route("/api/steps", get(steps))
        .route("/api/lessons/{lang}/{id}", get(lesson))
        .route("/api/errno/{lang}", get(errno))
        .route("/api/glossary/{name}/{lang}", get(glossary))
        .route("/ws", get(websocket));
    let router = if index.exists() {
        // Set-up leaves a gzip copy beside each file of the page (the wasm
        // shrinks to about 40 %); browsers that accept gzip get it.
        api.fallback_service(
            ServeDir::new(&web_dir)
                .precompressed_gzip()
                .fallback(ServeFile::new(index).precompressed_gzip()),
        )
    } else {
        api.fallback(page_missing)
    };
    router
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Destroys boxes whose page has been gone longer than the grace period.
async fn reap(registry: Arc<Registry>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        session::destroy(registry.expired()).await;
    }
}

/// Resolves at SIGTERM or SIGINT. The handlers are installed when this is
/// called, so call it before anyone can learn the server is up.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

/// Serves until SIGINT or SIGTERM; every box is destroyed before returning.
pub async fn serve(engine: Arc<Engine>, options: ServeOptions) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    let allowlist = Allowlist::new(addr, &options.allow_hosts, options.token.clone());
    let registry = Arc::new(Registry::new(engine, options.max_boxes, options.grace));
    let terminal_allowed = addr.ip().is_loopback();
    let app = router(
        registry.clone(),
        allowlist,
        options.web_dir,
        terminal_allowed,
    );

    let shown = if addr.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), addr.port())
    } else {
        addr
    };
    let url = match &options.token {
        Some(token) => format!("http://{shown}/?token={token}"),
        None => format!("http://{shown}/"),
    };
    let shutdown = shutdown_signal()?;
    println!("{url}");
    use std::io::Write;
    std::io::stdout().flush()?;

    let reaper = tokio::spawn(reap(registry.clone()));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    reaper.abort();
    session::destroy(registry.drain()).await;
    Ok(())
}
