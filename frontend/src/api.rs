//! The server's HTTP endpoints, all on the page's own origin.

use std::collections::HashMap;

use damda_protocol::{Lesson, StepInfo};
use gloo::net::http::Request;
use serde::de::DeserializeOwned;

use crate::i18n::Lang;

async fn get_json<T: DeserializeOwned>(url: &str) -> Result<T, String> {
    let response = Request::get(url).send().await.map_err(|e| e.to_string())?;
    if !response.ok() {
        return Err(format!("{url}: HTTP {}", response.status()));
    }
    response.json::<T>().await.map_err(|e| e.to_string())
}

/// `GET /api/steps`: the lesson order with titles and availability.
pub async fn steps() -> Result<Vec<StepInfo>, String> {
    get_json("/api/steps").await
}

/// `GET /api/lessons/{lang}/{id}`: a lesson rendered to HTML by the server.
pub async fn lesson(lang: Lang, id: &str) -> Result<Lesson, String> {
    get_json(&format!("/api/lessons/{}/{id}", lang.code())).await
}

/// `GET /api/errno/{lang}`: errno names (`EPERM`) to a short explanation.
pub async fn errno(lang: Lang) -> Result<HashMap<String, String>, String> {
    get_json(&format!("/api/errno/{}", lang.code())).await
}
