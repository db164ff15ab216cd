//! Lesson text, compiled in from lessons/{ko,en}/<id>.md, and the errno
//! explanations from lessons/errno.toml. Rust code holds no lesson prose.

use damda_protocol::{Lesson, StepId, StepInfo};
use include_dir::{include_dir, Dir};
use std::collections::BTreeMap;

static LESSONS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../lessons");

pub const LANGUAGES: [&str; 2] = ["ko", "en"];

/// The Markdown source of a lesson, if it exists.
fn source(lang: &str, id: &str) -> Option<&'static str> {
    if !LANGUAGES.contains(&lang) || !id.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    LESSONS
        .get_file(format!("{lang}/{id}.md"))
        .and_then(|file| file.contents_utf8())
}

/// The title: the text of the first `# ` line.
fn title_of(markdown: &str) -> String {
    markdown
        .lines()
        .find_map(|line| line.strip_prefix("# "))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// A lesson rendered to HTML. The Markdown is the project's own, so raw HTML
/// in it is not expected; it is escaped all the same.
pub fn lesson(lang: &str, id: &str) -> Option<Lesson> {
    use pulldown_cmark::{html, Event, Options, Parser};
    let markdown = source(lang, id)?;
    let parser = Parser::new_ext(markdown, Options::ENABLE_TABLES).map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Event::Text(raw),
        other => other,
    });
    let mut rendered = String::new();
    html::push_html(&mut rendered, parser);
    Some(Lesson {
        id: id.to_owned(),
        lang: lang.to_owned(),
        title: title_of(markdown),
        html: rendered,
    })
}

/// Every step in lesson order with its titles and whether this build applies it.
pub fn step_infos() -> Vec<StepInfo> {
    StepId::ALL
        .into_iter()
        .map(|id| StepInfo {
            id,
            title_ko: source("ko", id.as_str())
                .map(title_of)
                .unwrap_or_else(|| id.to_string()),
            title_en: source("en", id.as_str())
                .map(title_of)
                .unwrap_or_else(|| id.to_string()),
            available: crate::steps::is_available(id),
        })
        .collect()
}

/// A table of short explanations (lessons/<name>.toml), in one language:
/// `errno` (errno name → what it means) or `procfiles` (/proc path → what it
/// shows).
pub fn glossary(name: &str, lang: &str) -> Option<BTreeMap<String, String>> {
    if !LANGUAGES.contains(&lang) || !["errno", "procfiles"].contains(&name) {
        return None;
    }
    let text = LESSONS.get_file(format!("{name}.toml"))?.contents_utf8()?;
    let table: BTreeMap<String, BTreeMap<String, String>> = toml::from_str(text).ok()?;
    Some(
        table
            .into_iter()
            .filter_map(|(key, texts)| texts.get(lang).map(|t| (key, t.clone())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_available_step_has_both_lessons() {
        for info in step_infos().iter().filter(|i| i.available) {
            for lang in LANGUAGES {
                let lesson = lesson(lang, info.id.as_str())
                    .unwrap_or_else(|| panic!("missing lessons/{lang}/{}.md", info.id));
                assert!(!lesson.title.is_empty());
                assert!(lesson.html.starts_with("<h1>"), "{lang}/{}", info.id);
            }
        }
        assert!(lesson("ko", "intro").is_some());
    }

    #[test]
    fn uts_title_is_korean_first() {
        let uts = step_infos()
            .into_iter()
            .find(|i| i.id == StepId::Uts)
            .unwrap();
        assert!(
            uts.title_ko.contains("UTS 네임스페이스"),
            "{}",
            uts.title_ko
        );
    }

    #[test]
    fn lesson_ids_cannot_escape_the_folder() {
        assert!(lesson("ko", "../Cargo").is_none());
        assert!(lesson("fr", "uts").is_none());
        assert!(lesson("ko", "nope").is_none());
    }

    #[test]
    fn errno_explanations_cover_the_common_refusals() {
        for lang in LANGUAGES {
            let table = glossary("errno", lang).unwrap();
            for errno in ["EPERM", "EINVAL", "ENOENT", "EACCES"] {
                assert!(table.contains_key(errno), "{lang} {errno}");
            }
        }
        assert!(glossary("errno", "xx").is_none());
        assert!(glossary("../Cargo", "ko").is_none());
    }

    #[test]
    fn every_compared_proc_file_is_explained() {
        for lang in LANGUAGES {
            let table = glossary("procfiles", lang).unwrap();
            for path in crate::observe::PROC_FILES {
                assert!(table.contains_key(path), "{lang} {path}");
            }
        }
    }
}
