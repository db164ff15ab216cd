//! SHA-256 while streaming: every blob is hashed as it is written or read,
//! never in a second pass.

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("digest {0} is not sha256 (only sha256 is stored)")]
    NotSha256(Digest),
    #[error("digest mismatch: expected {expected}, found {found}")]
    Mismatch { expected: Digest, found: Digest },
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 64 hex digits of a sha256 digest (what blob and layer paths use).
pub fn sha256_hex(digest: &Digest) -> Result<&str, DigestError> {
    match digest.algorithm() {
        DigestAlgorithm::Sha256 => Ok(digest.digest()),
        _ => Err(DigestError::NotSha256(digest.clone())),
    }
}

fn from_hasher(hasher: Sha256) -> Digest {
    let text = format!("sha256:{}", hex(&hasher.finalize()));
    Digest::try_from(text).expect("64 lower-case hex digits make a valid sha256 digest")
}

/// The digest of a byte string.
pub fn of_bytes(bytes: &[u8]) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    from_hasher(hasher)
}

/// Refuses `found` unless it is `expected`.
pub fn check(expected: &Digest, found: &Digest) -> Result<(), DigestError> {
    if expected == found {
        Ok(())
    } else {
        Err(DigestError::Mismatch {
            expected: expected.clone(),
            found: found.clone(),
        })
    }
}

/// Hashes and counts what passes through, in either direction.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// The digest so far, and the inner reader or writer.
    pub fn finish(self) -> (Digest, u64, T) {
        (from_hasher(self.hasher), self.bytes, self.inner)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_input_has_the_well_known_digest() {
        assert_eq!(
            of_bytes(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut reader = Hashing::new(&b"abc"[..]);
        io::copy(&mut reader, &mut io::sink()).unwrap();
        let (digest, bytes, _) = reader.finish();
        assert_eq!(bytes, 3);
        assert_eq!(digest, of_bytes(b"abc"));
    }

    #[test]
    fn a_mismatch_names_both_digests() {
        let err = check(&of_bytes(b"a"), &of_bytes(b"b")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&of_bytes(b"a").to_string()), "{text}");
        assert!(text.contains(&of_bytes(b"b").to_string()), "{text}");
    }
}
