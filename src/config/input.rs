//! What the config loader takes in before the YAML parser sees it: at most
//! [`MAX_FILE_BYTES`] of file, nested at most [`MAX_DEPTH`] levels deep.
//!
//! Why: every start, `switchyard check` and every reload reads the file given with
//! `-c`, and the parser under it (libyaml via serde_yaml_ng) has no limits of its own
//! that act in time. A path that points at `/dev/zero` or a runaway log would be read
//! until memory ran out, and text nested a hundred thousand brackets deep takes libyaml
//! most of a minute. So the file is read through `Read::take` (what the file system says
//! its length is is not trusted: `/dev/zero` and FIFOs say 0), and the text is walked
//! once ([`nesting`]) to find how deep it nests before it is parsed. Both refusals are
//! [`ConfigError`]s like any other, so a reload that meets them is logged and the
//! running config keeps serving.

mod nesting;

use std::io::Read;
use std::path::Path;

use super::ConfigError;

/// The largest config file read: 16 MiB, some thousand times a large real one.
pub const MAX_FILE_BYTES: usize = 16 << 20;

/// The deepest nesting of collections accepted, counting the top-level mapping as 1.
/// The deepest any setting goes is 6 (`listen[1].tls.certificates[0].cert`), so 64
/// refuses nothing a config could mean, and stays below serde_yaml_ng's own limit
/// (128), which would come too late and without a key.
pub const MAX_DEPTH: usize = 64;

/// Reads at most [`MAX_FILE_BYTES`] + 1 bytes of `path`: one byte more than a config
/// may hold, so that a file over the cap is seen to be over it without reading the rest.
/// [`check_size`] says whether it was.
pub fn read_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Refuses text over [`MAX_FILE_BYTES`].
pub fn check_size(len: usize) -> Result<(), ConfigError> {
    if len <= MAX_FILE_BYTES {
        return Ok(());
    }
    Err(ConfigError {
        file: None,
        line: None,
        key: String::new(),
        problem: format!(
            "larger than {}, the most a config file may be",
            mib(MAX_FILE_BYTES)
        ),
        hint: Some("check the path given to -c/--config".into()),
    })
}

/// Refuses text over the size cap or nested deeper than [`MAX_DEPTH`]: a linear walk,
/// a few milliseconds for a megabyte, run before the text goes to the YAML parser.
pub fn check(text: &str) -> Result<(), ConfigError> {
    check_size(text.len())?;
    nesting::check(text, MAX_DEPTH).map_err(|e| ConfigError {
        file: None,
        line: Some(e.line),
        key: e.key,
        problem: format!("nested more than {MAX_DEPTH} levels deep"),
        hint: Some(
            "no setting goes deeper than 6, as in listen[1].tls.certificates[0].cert: \
             look for a runaway run of `[`, `{` or indentation"
                .into(),
        ),
    })
}

/// `16 MiB` for 16 << 20.
fn mib(bytes: usize) -> String {
    format!("{} MiB", bytes >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_one_byte_exact() {
        assert!(check_size(MAX_FILE_BYTES).is_ok());
        let e = check_size(MAX_FILE_BYTES + 1).unwrap_err();
        assert_eq!(
            e.problem,
            "larger than 16 MiB, the most a config file may be"
        );
        assert!(e.hint.unwrap().contains("-c"));
    }

    #[test]
    fn read_file_stops_one_byte_past_the_cap() {
        // /dev/zero says its length is 0 and never ends.
        let bytes = read_file(Path::new("/dev/zero")).unwrap();
        assert_eq!(bytes.len(), MAX_FILE_BYTES + 1);
        assert!(check_size(bytes.len()).is_err());
    }

    #[test]
    fn read_file_reads_a_small_file_whole() {
        let dir = std::env::temp_dir().join(format!("sy-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.yaml");
        std::fs::write(&path, "backends: [127.0.0.1:9001]\n").unwrap();
        assert_eq!(read_file(&path).unwrap(), b"backends: [127.0.0.1:9001]\n");
        assert!(read_file(&dir.join("missing.yaml")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The cap is checked before UTF-8: a read cut at the cap may end inside a
    /// character, and the file is too large, not badly encoded.
    #[test]
    fn from_bytes_checks_the_size_then_the_encoding() {
        use crate::config::{Config, Overrides};
        let path = Path::new("lb.yaml");
        let mut big = "é".repeat(MAX_FILE_BYTES / 2).into_bytes();
        big.push(0xC3);
        let e = Config::from_bytes(path, &big, &Overrides::default()).unwrap_err();
        assert!(
            e.to_string().starts_with("lb.yaml: larger than 16 MiB"),
            "{e}"
        );
        let e = Config::from_bytes(path, b"workers: 1\nmode: \xff\n", &Overrides::default())
            .unwrap_err();
        assert!(
            e.to_string().starts_with("lb.yaml:2: not UTF-8 text"),
            "{e}"
        );
    }

    #[test]
    fn deep_text_is_refused_with_line_and_key() {
        let text = format!(
            "backends: [127.0.0.1:9001]\nextra: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let mut e = check(&text).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(2), "extra"));
        assert_eq!(e.problem, "nested more than 64 levels deep");
        e.file = Some("deep.yaml".into());
        let shown = e.to_string();
        assert!(shown.starts_with("deep.yaml:2: extra: nested more than 64 levels deep ("));
    }

    #[test]
    fn real_configs_pass() {
        let texts = [
            include_str!("../../examples/switchyard.yaml"),
            crate::config::file::tests::CONTRACT,
        ];
        for t in texts {
            assert!(check(t).is_ok());
            assert!(nesting::depth(t) <= 5, "{}", nesting::depth(t));
        }
    }

    /// A megabyte of config walks in well under a second even in a debug build (a
    /// release build takes milliseconds); the bound is loose, for busy machines, and
    /// only a walk that is not linear could break it.
    #[test]
    fn the_walk_is_linear() {
        let item = "  - address: 127.0.0.1:9001 # a comment with [ and {\n    weight: 2\n    tls: {ca_file: 'ca [1].pem', insecure: false}\n";
        let text = format!("backends:\n{}", item.repeat((1 << 20) / item.len()));
        let start = std::time::Instant::now();
        assert!(check(&text).is_ok());
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }
}
