//! serde/libyaml errors turned into [`ConfigError`]s: the dotted key (from the path
//! serde_yaml_ng puts in front of its message, plus the field an "unknown field" or
//! "duplicate field" message names), the line, the problem in plain words, and a
//! hint: the valid keys and the nearest one for a typo, or an example line.

use super::lines::{line_of, locate};
use crate::config::ConfigError;

/// Turns a serde/libyaml error into `KEY: problem (hint)` with the best line known.
pub(super) fn from_yaml(text: &str, e: &serde_yaml_ng::Error) -> ConfigError {
    let location = e.location();
    let mut msg = e.to_string();
    if let Some(l) = &location {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(stripped) = msg.strip_suffix(&suffix) {
            msg = stripped.to_owned();
        }
    }
    let (path, msg) = match msg.split_once(": ") {
        Some((p, rest)) if is_path(p) => (p.to_owned(), rest.to_owned()),
        _ => (String::new(), msg),
    };
    let mut line = location.map(|l| l.line());
    let (key, problem, hint) = if let Some(field) = quoted_after(&msg, "unknown field `") {
        let expected = msg.split_once(", expected ").map(|(_, e)| e).unwrap_or("");
        let valid: Vec<&str> = expected
            .split('`')
            .enumerate()
            .filter_map(|(i, s)| (i % 2 == 1).then_some(s))
            .collect();
        let hint = match closest(field, &valid) {
            Some(best) => format!(
                "did you mean `{best}`? valid keys here: {}",
                valid.join(", ")
            ),
            None if valid.is_empty() => "this section takes no keys".to_owned(),
            None => format!("valid keys here: {}", valid.join(", ")),
        };
        (
            join(&path, field),
            format!("unknown key `{field}`"),
            Some(hint),
        )
    } else if let Some(field) = quoted_after(&msg, "missing field `") {
        let key = join(&path, field);
        let hint = format!("add `{field}:`");
        (key, format!("`{field}` is required here"), Some(hint))
    } else if let Some(field) = quoted_after(&msg, "duplicate field `") {
        let key = join(&path, field);
        line = locate(text, &key, 1).or(line);
        let problem = format!("`{field}` is given more than once");
        (key, problem, Some("keep only one of them".to_owned()))
    } else if msg.starts_with("invalid type") || msg.starts_with("invalid value") {
        let hint = example(&path).map(|x| format!("write e.g. `{x}`"));
        (path, humanise(&msg), hint)
    } else if path.is_empty() {
        let hint = "check the indentation and quoting on this line and the one before";
        (
            path,
            format!("not valid YAML: {msg}"),
            Some(hint.to_owned()),
        )
    } else {
        (path, msg, None)
    };
    ConfigError {
        file: None,
        line: line.or_else(|| line_of(text, &key)),
        key,
        problem,
        hint,
    }
}

/// Whether `s` looks like serde_yaml_ng's error path (`health`, `backends[1].tls`).
fn is_path(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']' | b'-'))
}

/// The text between `prefix` (ending in a backtick) and the next backtick.
fn quoted_after<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    msg.strip_prefix(prefix)?.split('`').next()
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Serde's type names in words a config writer knows.
fn humanise(msg: &str) -> String {
    msg.replace("expected u64", "expected a whole number")
        .replace("expected a boolean", "expected true or false")
        .replace(
            "expected a sequence",
            "expected a list (lines starting with `- `)",
        )
        .replace("unit value", "nothing")
}

/// The valid key nearest to a misspelt one, if it is near enough to be a typo.
fn closest<'a>(word: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (edit_distance(word, v), *v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A correct line for a key (list indexes ignored), for hints.
pub fn example(key: &str) -> Option<&'static str> {
    let mut plain = String::with_capacity(key.len());
    let mut in_index = false;
    for c in key.chars() {
        match c {
            '[' => in_index = true,
            ']' => in_index = false,
            c if !in_index => plain.push(c),
            _ => {}
        }
    }
    Some(match plain.as_str() {
        "listen" | "listen.address" => "listen: 0.0.0.0:8080",
        "admin" => "admin: 127.0.0.1:9090",
        "admin_token_file" => "admin_token_file: /etc/switchyard/admin.token",
        "workers" => "workers: 4",
        "mode" => "mode: process",
        "strategy" => "strategy: round-robin",
        "backends" => "backends: [127.0.0.1:9001, 127.0.0.1:9002]",
        "backends.address" => "address: 127.0.0.1:9001",
        "backends.weight" => "weight: 2",
        "backends.name" => "name: api-1",
        "health" | "timeouts" | "limits" | "sticky" | "pool" | "listen.tls" | "backends.tls" => {
            return None;
        }
        "health.path" => "path: /healthz",
        "health.interval" => "interval: 5s",
        "health.timeout" => "timeout: 2s",
        "timeouts.connect" => "connect: 2s",
        "health.unhealthy_threshold" => "unhealthy_threshold: 3",
        "health.healthy_threshold" => "healthy_threshold: 2",
        "health.passive_5xx" => "passive_5xx: false",
        "health.probes" => "probes: true",
        "timeouts.client_header" => "client_header: 10s",
        "timeouts.backend_response" => "backend_response: 30s",
        "timeouts.client_idle" => "client_idle: 60s",
        "timeouts.drain" => "drain: 30s",
        "retries" => "retries: 2",
        "access_log" => "access_log: true",
        "limits.request_line" => "request_line: 8192",
        "limits.header_section" => "header_section: 65536",
        "limits.headers" => "headers: 100",
        "sticky.cookie" => "cookie: SWITCHYARD_BACKEND",
        "pool.max_idle_per_backend" => "max_idle_per_backend: 64",
        "pool.idle_timeout" => "idle_timeout: 60s",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::ConfigError;
    use crate::config::file::FileConfig;

    fn parse_err(text: &str) -> ConfigError {
        FileConfig::parse(text).expect_err("should not parse")
    }

    #[test]
    fn unknown_top_level_key_is_named_with_line_and_suggestion() {
        let e = parse_err("workers: 2\n\n# a comment\nlisten: 127.0.0.1:8080\nlistn: 1\n");
        assert_eq!((e.key.as_str(), e.line), ("listn", Some(5)));
        let hint = e.hint.unwrap();
        assert!(hint.contains("did you mean `listen`?"), "{hint}");
        assert!(hint.contains("backends"), "{hint}");
    }

    #[test]
    fn unknown_nested_key_is_named_with_line() {
        let e = parse_err("workers: 1\nhealth:\n  path: /\n  intervall: 5s\n");
        assert_eq!((e.key.as_str(), e.line), ("health.intervall", Some(4)));
        assert_eq!(e.problem, "unknown key `intervall`");
        assert!(e.hint.unwrap().starts_with("did you mean `interval`?"));

        let e = parse_err("backends:\n  - address: a:1\n  - address: b:1\n    wieght: 2\n");
        assert_eq!((e.key.as_str(), e.line), ("backends[1].wieght", Some(4)));
        let e = parse_err(
            "listen:\n  address: a:1\n  tls:\n    certificates:\n      - {cert: a, kei: b}\n",
        );
        assert_eq!(e.key, "listen.tls.certificates[0].kei");
        assert_eq!(e.line, Some(5));
    }

    #[test]
    fn unrelated_unknown_key_gets_the_list_only() {
        let e = parse_err("sticky:\n  zzzzzzzz: 1\n");
        assert_eq!(e.key, "sticky.zzzzzzzz");
        assert_eq!(e.hint.as_deref(), Some("valid keys here: cookie"));
    }

    #[test]
    fn wrong_types_name_the_key_and_give_an_example() {
        let e = parse_err("retries: 1\nworkers: many\n");
        assert_eq!((e.key.as_str(), e.line), ("workers", Some(2)));
        assert!(
            e.problem.contains("expected a whole number"),
            "{}",
            e.problem
        );
        assert_eq!(e.hint.as_deref(), Some("write e.g. `workers: 4`"));
        let e = parse_err("access_log: maybe\n");
        assert!(
            e.problem.contains("expected true or false"),
            "{}",
            e.problem
        );
        let e = parse_err("backends:\n  - 127.0.0.1:9001\n  - [x]\n");
        assert_eq!((e.key.as_str(), e.line), ("backends[1]", Some(3)));
        let e = parse_err("health:\n  timeout: [1]\n");
        assert_eq!((e.key.as_str(), e.line), ("health.timeout", Some(2)));
    }

    #[test]
    fn duplicate_key_points_at_the_second_one() {
        let e = parse_err("listen: 127.0.0.1:1\nworkers: 1\nlisten: 127.0.0.1:2\n");
        assert_eq!((e.key.as_str(), e.line), ("listen", Some(3)));
        assert!(e.problem.contains("more than once"));
    }

    #[test]
    fn broken_yaml_has_a_line_and_a_hint() {
        let e = parse_err("listen: 127.0.0.1:8080\nbackends:\n  - address: \"a:1\n");
        assert!(e.problem.starts_with("not valid YAML"), "{}", e.problem);
        assert!(e.line.is_some() && e.hint.is_some());
        let e = parse_err("hello\n");
        assert!(
            e.problem.contains("expected a mapping of config keys"),
            "{}",
            e.problem
        );
    }
}
