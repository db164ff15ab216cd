//! Images and layers: an OCI image layout store, safe layer unpacking, the
//! default image built at set-up, imports of images a user already has,
//! and the `docker image ls` / `docker history`-like tables.

pub mod build;
pub mod commit;
pub mod digest;
pub mod export;
pub mod import;
pub mod provenance;
pub mod reference;
pub mod store;
pub mod unpack;
pub mod upper;

pub use build::{build_default, flatten, BuildError, Built, Item, DEFAULT_IMAGE};
pub use import::{import, progress_line, ImportError, Progress, Stage};
pub use provenance::{provider, Provenance};
pub use reference::{Reference, ReferenceError};
pub use store::{Image, ImageStore, LayerInfo, StoreError};
pub use unpack::{unpack, Refusal, UnpackError, UnpackOptions, UnpackStats};

use crate::paths::Paths;

/// The store at data/images.
pub fn open_store(paths: &Paths) -> Result<ImageStore, StoreError> {
    ImageStore::open(&paths.images())
}

/// `damda prepare`'s image half: the default image from the prepared rootfs.
pub fn prepare_default(paths: &Paths) -> Result<Built, BuildError> {
    build_default(&open_store(paths)?, &paths.rootfs())
}

/// The first 12 hex digits, as docker shortens ids.
pub fn short_id(digest: &oci_spec::image::Digest) -> String {
    digest.digest().chars().take(12).collect()
}

/// Bytes in decimal units with three significant digits, as docker prints.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    let precision = match value {
        v if v >= 100.0 || unit == 0 => 0,
        v if v >= 10.0 => 1,
        _ => 2,
    };
    format!("{value:.precision$}{}", units[unit])
}

/// "3 days ago" for an RFC 3339 time, `now` in Unix seconds.
pub fn human_age(created: Option<&str>, now: i64) -> String {
    use time::format_description::well_known::Rfc3339;
    let Some(then) = created.and_then(|c| time::OffsetDateTime::parse(c, &Rfc3339).ok()) else {
        return "N/A".to_owned();
    };
    let seconds = (now - then.unix_timestamp()).max(0);
    let (n, unit) = match seconds {
        s if s < 60 => (s, "second"),
        s if s < 3600 => (s / 60, "minute"),
        s if s < 86_400 => (s / 3600, "hour"),
        s if s < 14 * 86_400 => (s / 86_400, "day"),
        s if s < 60 * 86_400 => (s / (7 * 86_400), "week"),
        s if s < 730 * 86_400 => (s / (30 * 86_400), "month"),
        s => (s / (365 * 86_400), "year"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Left-aligned columns three spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == columns {
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[c] - cell.chars().count() + 3));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Stored size of an image: its layers and config as blobs.
fn image_size(image: &Image) -> u64 {
    image
        .manifest
        .layers()
        .iter()
        .map(|l| l.size())
        .sum::<u64>()
        + image.manifest.config().size()
}

/// `docker image ls`: REPOSITORY, TAG, IMAGE ID (the config digest), CREATED, SIZE.
pub fn images_table(store: &ImageStore) -> Result<String, StoreError> {
    let now = now();
    let mut rows = vec![["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
        .map(String::from)
        .to_vec()];
    for image in store.images()? {
        rows.push(vec![
            image.reference.repository_path(),
            image.reference.tag.clone(),
            short_id(&image.config_digest),
            human_age(image.config.created().as_deref(), now),
            human_size(image_size(&image)),
        ]);
    }
    Ok(table(&rows))
}

/// `docker history`: the newest step first; steps that made no layer (CMD)
/// show `<none>` and size 0.
pub fn history_table(store: &ImageStore, reference: &Reference) -> Result<String, StoreError> {
    let image = store.image(reference)?;
    let now = now();
    let history = image.config.history().clone().unwrap_or_default();
    let mut layers = image.manifest.layers().iter();
    let mut rows = Vec::new();
    for step in &history {
        let layer = if step.empty_layer().unwrap_or(false) {
            None
        } else {
            layers.next()
        };
        rows.push(vec![
            layer.map_or("<none>".to_owned(), |l| short_id(l.digest())),
            human_age(step.created().as_deref(), now),
            step.created_by().clone().unwrap_or_default(),
            human_size(layer.map_or(0, |l| l.size())),
        ]);
    }
    // Layers the history does not describe (images built without it).
    for layer in layers {
        rows.push(vec![
            short_id(layer.digest()),
            "N/A".to_owned(),
            String::new(),
            human_size(layer.size()),
        ]);
    }
    rows.reverse();
    rows.insert(
        0,
        ["LAYER", "CREATED", "CREATED BY", "SIZE"]
            .map(String::from)
            .to_vec(),
    );
    Ok(table(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(45_600_000), "45.6MB");
        assert_eq!(
            human_age(Some("1970-01-01T00:00:00Z"), 3 * 86_400),
            "3 days ago"
        );
        assert_eq!(
            human_age(Some("1970-01-01T00:00:00Z"), 59),
            "59 seconds ago"
        );
        assert_eq!(human_age(Some("not a date"), 0), "N/A");
    }

    #[test]
    fn tables_pad_every_column_but_the_last() {
        let rows = vec![
            vec!["A".to_owned(), "BB".to_owned()],
            vec!["ccc".to_owned(), "d".to_owned()],
        ];
        assert_eq!(table(&rows), "A     BB\nccc   d\n");
    }
}
