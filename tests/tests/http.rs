//! The HTTP API: health, the steps, the lessons and the errno tables.

use damda_e2e::*;
use damda_protocol::{Lesson, StepId, StepInfo};
use std::collections::BTreeMap;

/// Every HTTP test ends with no box ever started.
fn stop_clean(server: Server) {
    assert_eq!(
        server.helpers(),
        Vec::<u32>::new(),
        "HTTP requests started a box"
    );
    let status = server.stop();
    assert!(status.success(), "serve exited {status}");
}

#[tokio::test]
async fn health_says_ok() {
    let server = Server::start(&[]);
    let response = http_get(server.addr, "/api/health", &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    assert_eq!(response.json(), serde_json::json!({ "status": "ok" }));
    stop_clean(server);
}

#[tokio::test]
async fn steps_are_listed_in_lesson_order() {
    let server = Server::start(&[]);
    let response = http_get(server.addr, "/api/steps", &[]).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let steps: Vec<StepInfo> = serde_json::from_value(response.json()).expect("step infos");
    assert_eq!(steps.len(), 13);
    let ids: Vec<StepId> = steps.iter().map(|s| s.id).collect();
    assert_eq!(ids, StepId::ALL.to_vec());
    for step in &steps {
        assert!(
            !step.title_ko.is_empty() && !step.title_en.is_empty(),
            "{step:?}"
        );
    }
    let available = |id: StepId| steps.iter().find(|s| s.id == id).expect("listed").available;
    for id in StepId::ALL {
        assert!(available(id), "{id} should be available");
    }
    // Available steps form a prefix of the lesson order: the stepper walks them.
    let flags: Vec<bool> = steps.iter().map(|s| s.available).collect();
    assert!(flags.windows(2).all(|w| w[0] || !w[1]), "{flags:?}");
    let uts = steps.iter().find(|s| s.id == StepId::Uts).expect("uts");
    assert!(
        uts.title_ko.contains("UTS 네임스페이스"),
        "{}",
        uts.title_ko
    );
    stop_clean(server);
}

#[tokio::test]
async fn lessons_come_in_both_languages() {
    let server = Server::start(&[]);
    for lang in ["ko", "en"] {
        for id in ["intro", "host", "chroot", "uts"] {
            let response = http_get(server.addr, &format!("/api/lessons/{lang}/{id}"), &[]).await;
            assert_eq!(response.status, 200, "{lang}/{id}: {}", response.text());
            let lesson: Lesson = serde_json::from_value(response.json()).expect("a lesson");
            assert_eq!((lesson.lang.as_str(), lesson.id.as_str()), (lang, id));
            assert!(!lesson.title.is_empty(), "{lang}/{id} has no title");
            assert!(
                lesson.html.starts_with("<h1>"),
                "{lang}/{id}: {}",
                &lesson.html[..lesson.html.len().min(80)]
            );
        }
    }
    stop_clean(server);
}

#[tokio::test]
async fn unknown_lessons_are_404() {
    let server = Server::start(&[]);
    for path in [
        "/api/lessons/ko/nope",
        "/api/lessons/fr/uts",
        "/api/lessons/ko/..%2FCargo",
        "/api/errno/xx",
    ] {
        let response = http_get(server.addr, path, &[]).await;
        assert_eq!(response.status, 404, "{path}: {}", response.text());
    }
    stop_clean(server);
}

#[tokio::test]
async fn errno_tables_explain_eperm_in_both_languages() {
    let server = Server::start(&[]);
    let mut tables = Vec::new();
    for lang in ["ko", "en"] {
        let response = http_get(server.addr, &format!("/api/errno/{lang}"), &[]).await;
        assert_eq!(response.status, 200, "{lang}: {}", response.text());
        let table: BTreeMap<String, String> =
            serde_json::from_value(response.json()).expect("name → text");
        for errno in ["EPERM", "ENOENT"] {
            assert!(
                table.get(errno).is_some_and(|text| !text.is_empty()),
                "{lang} lacks {errno}"
            );
        }
        tables.push(table);
    }
    assert_ne!(
        tables[0]["EPERM"], tables[1]["EPERM"],
        "ko and en say it differently"
    );
    stop_clean(server);
}
