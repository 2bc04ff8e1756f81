//! `admin_token_file`: the bearer token admin writes must carry.
//!
//! The token is read when the config is built (start and every reload, so replacing
//! the file and reloading rotates it) and kept only in memory, never printed: its
//! `Debug` is redacted because configs are logged. Plain data of the config; the admin
//! listener decides with it (`admin::access`).

use std::path::Path;
use std::sync::Arc;

/// Longest token file read (a token is a few dozen bytes).
const MAX_TOKEN_FILE: u64 = 4096;

/// The admin bearer token (the file's content, trimmed).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<[u8]>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(redacted)")
    }
}

impl AdminToken {
    /// A token from text (tests; the config reads it with [`AdminToken::read`]).
    pub fn new(token: &str) -> Result<AdminToken, String> {
        let t = token.trim();
        if t.is_empty() {
            return Err("the token is empty".into());
        }
        // Visible ASCII only: anything else cannot travel in an Authorization header.
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "the token has spaces, control characters or non-ASCII bytes inside it".into(),
            );
        }
        Ok(AdminToken(Arc::from(t.as_bytes())))
    }

    /// Reads the token from `path`: its content, trimmed; an unreadable, empty,
    /// oversized or not-a-header-value file is an error saying which.
    pub fn read(path: &Path) -> Result<AdminToken, String> {
        use std::io::Read;
        let shown = path.display();
        let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
        let mut bytes = Vec::new();
        file.take(MAX_TOKEN_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {shown}: {e}"))?;
        if bytes.len() as u64 > MAX_TOKEN_FILE {
            return Err(format!("{shown} is over {MAX_TOKEN_FILE} bytes"));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| format!("{shown} is not text"))?;
        AdminToken::new(text).map_err(|e| format!("{shown}: {e}"))
    }

    /// Whether `presented` is the token, in time that depends only on the lengths.
    pub fn matches(&self, presented: &[u8]) -> bool {
        if presented.len() != self.0.len() {
            return false;
        }
        let diff = self
            .0
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}
