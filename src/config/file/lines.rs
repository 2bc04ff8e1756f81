//! Where a key is in the source text: [`line_of`] walks block-style YAML by
//! indentation, since serde's values keep no spans.
//!
//! The text is cut into entries (a `- ` list marker, a `key:`, or anything else),
//! each with its line and column; a key's children are the entries after it that
//! are indented deeper (or, for a key holding a list, `- ` markers at its own
//! column). Flow style (`{a: 1}`, `[x, y]`) is not looked into: a key inside it
//! gets the line of the nearest enclosing key.

/// The 1-based line of a dotted key path (`health.interval`, `backends[2].weight`)
/// in block-style YAML. A key that is written inline (flow style) or is missing
/// gives its nearest enclosing key's line; `None` if even the first step is missing.
pub fn line_of(text: &str, key: &str) -> Option<usize> {
    locate(text, key, 0)
}

/// One piece of a line: a `- ` list marker, a `key:`, or anything else.
struct Entry<'a> {
    line: usize,
    col: usize,
    key: Option<&'a str>,
    dash: bool,
}

fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" || trimmed == "..." {
            continue;
        }
        let mut col = raw.len() - raw.trim_start_matches(' ').len();
        loop {
            let rest = &raw[col..];
            if rest == "-" || rest.starts_with("- ") {
                out.push(Entry {
                    line: n + 1,
                    col,
                    key: None,
                    dash: true,
                });
                col += 1 + (rest[1..].len() - rest[1..].trim_start_matches(' ').len());
                if col < raw.len() {
                    continue;
                }
            } else {
                out.push(Entry {
                    line: n + 1,
                    col,
                    key: key_of(rest),
                    dash: false,
                });
            }
            break;
        }
    }
    out
}

/// `name` of a `name: value` / `"name": value` line, if it is one.
fn key_of(rest: &str) -> Option<&str> {
    let bytes = rest.as_bytes();
    let end = (0..bytes.len()).find(|&i| {
        bytes[i] == b':' && bytes.get(i + 1).is_none_or(|b| *b == b' ' || *b == b'\t')
    })?;
    let key = rest[..end].trim_end();
    if key.starts_with(['{', '[', '#', '?']) {
        return None;
    }
    Some(key.trim_matches(|c| c == '"' || c == '\''))
}

/// The line of the `nth` (0-based) match of `key`'s last step; earlier steps take
/// their first match. Falls back to the deepest step found, as [`line_of`] says.
pub(super) fn locate(text: &str, key: &str, nth: usize) -> Option<usize> {
    let es = entries(text);
    let steps = steps(key);
    let mut node: Option<usize> = None;
    for (s, step) in steps.iter().enumerate() {
        let (start, end) = region(&es, node);
        let Some(level) = es.get(start).filter(|_| start < end).map(|e| e.col) else {
            break;
        };
        let want = if s + 1 == steps.len() { nth } else { 0 };
        let found = (start..end)
            .filter(|&i| es[i].col == level)
            .filter(|&i| match step {
                Step::Key(k) => es[i].key == Some(*k),
                Step::Index(_) => es[i].dash,
            })
            .nth(match step {
                Step::Key(_) => want,
                Step::Index(n) => *n,
            });
        match found {
            Some(i) => node = Some(i),
            None => break,
        }
    }
    node.map(|i| es[i].line)
}

/// The entries under `node` (all of them for the root).
fn region(es: &[Entry<'_>], node: Option<usize>) -> (usize, usize) {
    let Some(i) = node else {
        return (0, es.len());
    };
    let (col, dash) = (es[i].col, es[i].dash);
    let end = (i + 1..es.len())
        .find(|&j| es[j].col < col || (es[j].col == col && (dash || !es[j].dash)))
        .unwrap_or(es.len());
    (i + 1, end)
}

enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// `backends[2].weight` -> `backends`, `[2]`, `weight`.
fn steps(key: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(name) = pieces.next().filter(|n| !n.is_empty()) {
            out.push(Step::Key(name));
        }
        for idx in pieces {
            match idx.trim_end_matches(']').parse() {
                Ok(n) => out.push(Step::Index(n)),
                Err(_) => return out,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_walks_block_yaml() {
        let text = "\
# header
listen: 127.0.0.1:8080
backends:
  - address: a:1
    weight: 2
  - b:2
  -
    address: c:3
    weight: 0
health:
  path: /

  interval: 5s   # comment
timeouts: {connect: 0s}
sticky:
    cookie: x
";
        assert_eq!(line_of(text, "listen"), Some(2));
        assert_eq!(line_of(text, "backends"), Some(3));
        assert_eq!(line_of(text, "backends[0]"), Some(4));
        assert_eq!(line_of(text, "backends[0].address"), Some(4));
        assert_eq!(line_of(text, "backends[0].weight"), Some(5));
        assert_eq!(line_of(text, "backends[1]"), Some(6));
        assert_eq!(line_of(text, "backends[2].weight"), Some(9));
        assert_eq!(line_of(text, "health.interval"), Some(13));
        assert_eq!(line_of(text, "sticky.cookie"), Some(16));
        // Flow style and absent keys fall back to the nearest parent.
        assert_eq!(line_of(text, "timeouts.connect"), Some(14));
        assert_eq!(line_of(text, "backends[1].address"), Some(6));
        assert_eq!(line_of(text, "backends[7].weight"), Some(3));
        assert_eq!(line_of(text, "health.timeout"), Some(10));
        assert_eq!(line_of(text, "admin"), None);
        assert_eq!(line_of("", "listen"), None);
    }

    #[test]
    fn line_of_handles_unindented_lists_and_quotes() {
        let text = "backends:\n- address: a:1\n- address: b:2\n  weight: 3\n\"retries\": 2\n";
        assert_eq!(line_of(text, "backends[1].weight"), Some(4));
        assert_eq!(line_of(text, "retries"), Some(5));
        // A key of the same name deeper down is not taken for a top-level one.
        assert_eq!(line_of("health:\n  path: /\npath: x\n", "path"), Some(3));
        assert_eq!(locate("a: 1\nb: 2\na: 3\n", "a", 1), Some(3));
    }
}
