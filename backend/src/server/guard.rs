//! Who may talk to the server: the Host header is always checked against an
//! allowlist (DNS rebinding), and a request that carries an Origin header must
//! come from an allowed origin (cross-site websocket hijacking). Classroom mode
//! adds a token, taken once from `?token=` and kept in a cookie.

use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("missing Host header")]
    MissingHost,
    #[error("host {0:?} is not allowed here")]
    ForeignHost(String),
    #[error("origin {0:?} is not allowed to use this server")]
    ForeignOrigin(String),
    #[error("this classroom server needs its token (open the URL the teacher gave)")]
    MissingToken,
}

/// The names and origins a server answers to.
#[derive(Debug, Clone)]
pub struct Allowlist {
    hosts: Vec<String>,
    origins: Vec<String>,
    token: Option<String>,
}

impl Allowlist {
    /// Loopback names on `port`, plus `extra_hosts` (classroom mode).
    pub fn new(addr: SocketAddr, extra_hosts: &[String], token: Option<String>) -> Self {
        let port = addr.port();
        let mut hosts: Vec<String> = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|name| format!("{name}:{port}"))
            .collect();
        if !addr.ip().is_loopback() && !addr.ip().is_unspecified() {
            hosts.push(addr.to_string());
        }
        for extra in extra_hosts {
            hosts.push(if extra.contains(':') && !extra.ends_with(']') {
                extra.clone()
            } else {
                format!("{extra}:{port}")
            });
        }
        let origins = hosts
            .iter()
            .flat_map(|host| [format!("http://{host}"), format!("https://{host}")])
            .collect();
        Allowlist {
            hosts,
            origins,
            token,
        }
    }

    pub fn check(
        &self,
        host: Option<&str>,
        origin: Option<&str>,
        presented_tokens: &[&str],
    ) -> Result<(), GuardError> {
        let host = host.ok_or(GuardError::MissingHost)?;
        if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
            return Err(GuardError::ForeignHost(host.to_owned()));
        }
        if let Some(origin) = origin {
            if !self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                return Err(GuardError::ForeignOrigin(origin.to_owned()));
            }
        }
        match &self.token {
            Some(token) if !presented_tokens.iter().any(|t| constant_time_eq(t, token)) => {
                Err(GuardError::MissingToken)
            }
            _ => Ok(()),
        }
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `token` from a query string or a `damda_token` cookie header.
pub fn tokens_in<'a>(query: Option<&'a str>, cookie: Option<&'a str>) -> Vec<&'a str> {
    let from_query = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|pair| pair.strip_prefix("token="));
    let from_cookie = cookie
        .into_iter()
        .flat_map(|c| c.split(';'))
        .filter_map(|pair| pair.trim().strip_prefix("damda_token="));
    from_query.chain(from_cookie).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Allowlist {
        Allowlist::new("127.0.0.1:4780".parse().unwrap(), &[], None)
    }

    #[test]
    fn loopback_names_with_the_port_pass() {
        let list = loopback();
        for host in [
            "127.0.0.1:4780",
            "localhost:4780",
            "[::1]:4780",
            "LOCALHOST:4780",
        ] {
            assert_eq!(list.check(Some(host), None, &[]), Ok(()), "{host}");
        }
        assert_eq!(
            list.check(Some("127.0.0.1:4780"), Some("http://localhost:4780"), &[]),
            Ok(())
        );
    }

    #[test]
    fn rebinding_and_foreign_origins_are_refused() {
        let list = loopback();
        assert_eq!(
            list.check(Some("evil.example:4780"), None, &[]),
            Err(GuardError::ForeignHost("evil.example:4780".into()))
        );
        assert_eq!(
            list.check(Some("127.0.0.1:9999"), None, &[]),
            Err(GuardError::ForeignHost("127.0.0.1:9999".into()))
        );
        assert_eq!(
            list.check(Some("127.0.0.1:4780"), Some("http://evil.example"), &[]),
            Err(GuardError::ForeignOrigin("http://evil.example".into()))
        );
        assert_eq!(
            list.check(Some("127.0.0.1:4780"), Some("null"), &[]),
            Err(GuardError::ForeignOrigin("null".into()))
        );
        assert_eq!(list.check(None, None, &[]), Err(GuardError::MissingHost));
    }

    #[test]
    fn classroom_mode_needs_the_token() {
        let list = Allowlist::new(
            "0.0.0.0:4780".parse().unwrap(),
            &["class.local".into()],
            Some("s3cret".into()),
        );
        assert_eq!(
            list.check(Some("class.local:4780"), None, &[]),
            Err(GuardError::MissingToken)
        );
        assert_eq!(
            list.check(Some("class.local:4780"), None, &["s3cret"]),
            Ok(())
        );
        assert_eq!(
            list.check(Some("class.local:4780"), None, &["wrong"]),
            Err(GuardError::MissingToken)
        );
    }

    #[test]
    fn tokens_come_from_query_or_cookie() {
        assert_eq!(tokens_in(Some("a=1&token=x"), None), vec!["x"]);
        assert_eq!(tokens_in(None, Some("k=v; damda_token=y")), vec!["y"]);
        assert!(tokens_in(None, None).is_empty());
    }
}
