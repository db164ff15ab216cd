//! Image names as registry/repository:tag, e.g. `damda.local/busybox-httpd:latest`.
//! A name without a registry is Docker Hub's, as `docker` reads it
//! (`busybox` is `docker.io/library/busybox:latest`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image name {name:?}: {reason}")]
pub struct ReferenceError {
    pub name: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

const DEFAULT_REGISTRY: &str = "docker.io";

/// `[a-z0-9]+` joined by `.`, `_`, `__` or runs of `-` (the distribution spec's rule).
fn valid_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if alnum(&b) {
            if !matches!(separator.as_str(), "" | "." | "_" | "__")
                && !separator.bytes().all(|c| c == b'-')
            {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(b as char);
        } else {
            return false;
        }
    }
    true
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn valid_registry(host: &str) -> bool {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok
        && !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Reference {
    pub fn parse(name: &str) -> Result<Reference, ReferenceError> {
        let fail = |reason| ReferenceError {
            name: name.to_owned(),
            reason,
        };
        if name.contains('@') {
            return Err(fail("digest references are not supported; use a tag"));
        }
        // A colon after the last slash starts the tag; one before it is a port.
        let (path, tag) = match name.rfind(':') {
            Some(colon) if !name[colon..].contains('/') => (&name[..colon], &name[colon + 1..]),
            _ => (name, "latest"),
        };
        if !valid_tag(tag) {
            return Err(fail(
                "the tag must be letters, digits, `_`, `.` or `-` (at most 128)",
            ));
        }
        let (registry, repository) = match path.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            Some(_) => (DEFAULT_REGISTRY.to_owned(), path.to_owned()),
            None => (DEFAULT_REGISTRY.to_owned(), format!("library/{path}")),
        };
        if !valid_registry(&registry) {
            return Err(fail(
                "the registry must be a host name with an optional port",
            ));
        }
        if repository.is_empty() || !repository.split('/').all(valid_component) {
            return Err(fail(
                "the repository must be lower-case letters and digits separated by `/`, `.`, `_` or `-`",
            ));
        }
        if registry.len() + repository.len() + 1 > 255 {
            return Err(fail("the name is longer than 255 characters"));
        }
        Ok(Reference {
            registry,
            repository,
            tag: tag.to_owned(),
        })
    }

    /// registry/repository, as `docker image ls` shows REPOSITORY.
    pub fn repository_path(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_and_docker_hub_short_names() {
        let r = Reference::parse("damda.local/busybox-httpd:latest").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("damda.local", "busybox-httpd", "latest")
        );
        assert_eq!(r.to_string(), "damda.local/busybox-httpd:latest");
        assert_eq!(
            Reference::parse("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            Reference::parse("localhost:5000/a/b:v1.2")
                .unwrap()
                .to_string(),
            "localhost:5000/a/b:v1.2"
        );
        assert_eq!(
            Reference::parse("user/app:1").unwrap().to_string(),
            "docker.io/user/app:1"
        );
    }

    #[test]
    fn bad_names_are_refused_with_a_reason() {
        for bad in [
            "Busybox",
            "a/../b",
            "damda.local/x:",
            "damda.local/x:-bad",
            "x@sha256:00",
            "damda.local/",
            "a//b",
            "x-:1",
        ] {
            let err = Reference::parse(bad).unwrap_err();
            assert_eq!(err.name, bad);
        }
    }
}
