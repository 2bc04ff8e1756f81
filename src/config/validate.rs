//! `FileConfig` + command-line `Overrides` -> a validated [`Config`].
//!
//! Every value that is set on the command line wins over the file (`-b` replaces the
//! file's backends, which are then not looked at); the file's other values are still
//! checked when a flag overrides them, so a file `check` rejects never runs. Everything
//! else comes from the file or the defaults of the contract. Each check fails with a [`ConfigError`] naming the key (dotted, with list
//! indexes, or the flag for command-line values), its line in the file, the problem
//! and a hint saying what to write instead. Backends are resolved here, once.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;

use super::file::{AccessLogFile, FileConfig, example, line_of};
use super::*;

mod backends;
mod discovery;
mod listen;
mod sections;

/// Where an error points: the file (if any) and its text, for line numbers.
struct Ctx<'a> {
    src: Option<(&'a Path, &'a str)>,
    /// Check without the outside world: no host name resolved, no file read
    /// ([`Config::check_offline`]).
    offline: bool,
    /// Host names already resolved by the loader (a child building the generation the
    /// master sent): looked up here instead of asking DNS.
    resolved: Option<&'a super::Resolved>,
}

impl Ctx<'_> {
    /// A path from the file, relative to the file's directory when not absolute.
    fn relative(&self, p: &str) -> std::path::PathBuf {
        let path = Path::new(p);
        match self.src.and_then(|(file, _)| file.parent()) {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    /// An error about `key`; keys starting with `--` are command-line flags.
    fn err(&self, key: &str, problem: impl Into<String>, hint: impl Into<String>) -> ConfigError {
        let src = self.src.filter(|_| !key.starts_with("--"));
        ConfigError {
            file: src.map(|(p, _)| p.to_path_buf()),
            line: src.and_then(|(_, text)| line_of(text, key)),
            key: key.to_owned(),
            problem: problem.into(),
            hint: Some(hint.into()),
        }
    }

    /// A number in `range`, or `default` when absent.
    fn number(
        &self,
        key: &str,
        v: Option<u64>,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let v = v.unwrap_or(default);
        if range.contains(&v) {
            return Ok(v);
        }
        let (lo, hi) = (range.start(), range.end());
        let problem = if v < *lo {
            format!("{v} is too small: the least allowed is {lo}")
        } else {
            format!("{v} is too large: the most allowed is {hi}")
        };
        let hint = match example(key) {
            Some(x) => format!("write a number from {lo} to {hi}, e.g. `{x}`"),
            None => format!("write a number from {lo} to {hi}"),
        };
        Err(self.err(key, problem, hint))
    }

    /// A positive duration, or `default` when absent.
    fn duration(
        &self,
        key: &str,
        v: Option<&String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(text) = v else {
            return Ok(default);
        };
        let hint = format!("write e.g. `{}`", example(key).unwrap_or("interval: 5s"));
        match parse_duration(text) {
            Ok(d) if d.is_zero() => Err(self.err(key, "must be greater than zero", hint)),
            Ok(d) => Ok(d),
            Err(e) => Err(self.err(key, e, hint)),
        }
    }

    /// An `ADDR:PORT` socket address.
    fn socket(&self, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        text.trim().parse().map_err(|_| {
            let problem = format!("'{text}' is not an ADDR:PORT address");
            let x = example(key).unwrap_or("listen: 0.0.0.0:8080");
            self.err(
                key,
                problem,
                format!("write an IP address and a port, e.g. `{x}` or [::1]:8080"),
            )
        })
    }
}

pub fn build(
    src: Option<(&Path, &str)>,
    file: FileConfig,
    o: &Overrides,
) -> Result<Config, ConfigError> {
    build_with(
        Ctx {
            src,
            offline: false,
            resolved: None,
        },
        file,
        o,
    )
}

/// [`build`] with every backend's addresses taken from `resolved` (made by the
/// loader that sent this generation); nothing is looked up.
pub fn build_resolved(
    src: Option<(&Path, &str)>,
    file: FileConfig,
    o: &Overrides,
    resolved: &super::Resolved,
) -> Result<Config, ConfigError> {
    build_with(
        Ctx {
            src,
            offline: false,
            resolved: Some(resolved),
        },
        file,
        o,
    )
}

/// [`build`] without the outside world: backends' host names are not resolved (an IP
/// address is taken, a name stands for 0.0.0.0), and certificate and CA files are not
/// read. The config it makes is for looking at, never for running.
pub fn build_offline(
    src: Option<(&Path, &str)>,
    file: FileConfig,
    o: &Overrides,
) -> Result<Config, ConfigError> {
    build_with(
        Ctx {
            src,
            offline: true,
            resolved: None,
        },
        file,
        o,
    )
}

fn build_with(cx: Ctx<'_>, file: FileConfig, o: &Overrides) -> Result<Config, ConfigError> {
    // Listeners and admin: the file's values are checked even when a flag overrides them.
    let listeners = listen::listeners(&cx, file.listen.as_ref(), o)?;
    let mut admin = match &file.admin {
        Some(a) => Some(cx.socket("admin", a)?),
        None => None,
    };
    let admin_from_cli = o.admin.is_some();
    admin = o.admin.or(admin);
    let clash = admin.and_then(|a| {
        let i = listeners.iter().position(|l| same_port(a, l.address))?;
        Some((a, i))
    });
    if let Some((a, i)) = clash {
        let key = if admin_from_cli { "--admin" } else { "admin" };
        let other = match (i, o.listen.is_some()) {
            (0, true) => "--listen".to_owned(),
            (0, false) => "listen".to_owned(),
            _ => format!("listen[{i}]"),
        };
        let problem = format!(
            "{a} clashes with the {other} address {}",
            listeners[i].address
        );
        return Err(cx.err(
            key,
            problem,
            "give the admin listener its own port, e.g. `admin: 127.0.0.1:9090`",
        ));
    }

    let admin_token = match &file.admin_token_file {
        // Offline, the file is not read.
        Some(_) if cx.offline => None,
        Some(p) => Some(super::AdminToken::read(&cx.relative(p)).map_err(|e| {
            let hint = "put the token in the file, e.g. `openssl rand -hex 32 > FILE`";
            cx.err("admin_token_file", e, hint)
        })?),
        None => None,
    };

    let cpus = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(1024);
    let mut workers = cx.number("workers", file.workers, cpus as u64, 1..=1024)? as usize;
    if let Some(w) = o.workers {
        workers = cx.number("--workers", Some(w as u64), 1, 1..=1024)? as usize;
    }

    let mut mode = if cfg!(target_os = "linux") {
        Mode::Process
    } else {
        Mode::Thread
    };
    if let Some(m) = &file.mode {
        mode = match m.trim() {
            "process" => Mode::Process,
            "thread" => Mode::Thread,
            _ => {
                return Err(cx.err(
                    "mode",
                    format!("unknown mode '{m}'"),
                    "use `mode: process` or `mode: thread`",
                ));
            }
        };
    }
    let mode = o.mode.unwrap_or(mode);

    let mut strategy = StrategyKind::RoundRobin;
    if let Some(s) = &file.strategy {
        strategy = StrategyKind::parse(s.trim()).ok_or_else(|| {
            let hint = format!("use one of: {}", StrategyKind::NAMES);
            cx.err("strategy", format!("unknown strategy '{s}'"), hint)
        })?;
    }
    let strategy = o.strategy.unwrap_or(strategy);

    let mut backends = if o.backends.is_empty() {
        let items = file.backends.unwrap_or_default();
        backends::from_file(&cx, items.into_iter().map(|i| i.0).collect())?
    } else {
        backends::from_cli(&cx, &o.backends)?
    };
    if o.insecure {
        // -k: no certificate verification for any TLS backend.
        for b in &mut backends {
            b.tls.insecure = true;
        }
    }
    let discovery = discovery::sources(&cx, file.discovery.unwrap_or_default())?;
    let resolver = discovery::resolver(&cx, file.resolver)?;
    let (access_log, access_log_format, access_log_path) = match file.access_log {
        None | Some(AccessLogFile::On(false)) => (o.access_log, Default::default(), None),
        Some(AccessLogFile::On(true)) => (true, Default::default(), None),
        Some(AccessLogFile::Map(m)) => {
            let format = match m.format.as_deref().map(str::trim) {
                None | Some("combined") => crate::access_log::Format::Combined,
                Some("json") => crate::access_log::Format::Json,
                Some(f) => {
                    let hint = "write `format: combined` or `format: json`";
                    let problem = format!("'{f}' is not combined or json");
                    return Err(cx.err("access_log.format", problem, hint));
                }
            };
            let path = match m.path.as_deref().map(str::trim) {
                Some("") => {
                    let hint = "write a path, or leave `path` out for stderr";
                    return Err(cx.err("access_log.path", "is empty", hint));
                }
                p => p.map(|p| cx.relative(p)),
            };
            (true, format, path)
        }
    };
    let log_format = match file.log_format.as_deref() {
        None => crate::logging::LogFormat::Text,
        Some(f) => crate::logging::LogFormat::parse(f).ok_or_else(|| {
            let hint = "write `log_format: text` or `log_format: json`";
            cx.err("log_format", format!("'{f}' is not text or json"), hint)
        })?,
    };
    let log_format = o.log_format.unwrap_or(log_format);
    let log_file = match file.log_file.as_deref().map(str::trim) {
        None => None,
        Some("") => {
            let hint = "write a path, e.g. `log_file: /var/log/switchyard/switchyard.log`";
            return Err(cx.err("log_file", "is empty", hint));
        }
        Some(p) => Some(cx.relative(p)),
    };
    if backends.is_empty() && discovery.is_empty() {
        let hint = "add backends: - address: HOST:PORT, or pass -b HOST:PORT";
        return Err(cx.err("backends", "no backends are configured", hint));
    }

    let health = sections::health(&cx, file.health)?;
    let timeouts = sections::timeouts(&cx, file.timeouts)?;
    let retries = sections::retries(&cx, file.retries)?;
    let limits = sections::limits(&cx, file.limits)?;
    let sticky_cookie = sections::sticky_cookie(&cx, file.sticky)?;
    let hash = sections::hash(&cx, file.hash)?;
    let retry_budget = sections::retry_budget(&cx, file.retry_budget)?;
    let rate_limits = sections::rate_limits(&cx, file.rate_limits.unwrap_or_default())?;
    let queue = {
        let q = file.queue.unwrap_or_default();
        crate::config::QueueConfig {
            size: cx.number("queue.size", q.size, 1000, 0..=1_000_000)?,
            timeout: cx.duration("queue.timeout", q.timeout.as_ref(), Duration::from_secs(2))?,
        }
    };
    let redis = match file.redis {
        None => None,
        Some(r) => {
            let url = r.url.unwrap_or_else(|| "redis://127.0.0.1:6379/0".into());
            if !(url.starts_with("redis://") || url.starts_with("unix://")) {
                let problem = format!("'{url}' is not a redis:// URL");
                return Err(cx.err(
                    "redis.url",
                    problem,
                    "write e.g. `url: redis://127.0.0.1:6379/0`",
                ));
            }
            let timeout = cx.duration(
                "redis.timeout",
                r.timeout.as_ref(),
                Duration::from_millis(50),
            )?;
            let on_error = match r.on_error.as_deref().map(str::trim) {
                None | Some("allow") => crate::limit::redis::OnError::Allow,
                Some("deny") => crate::limit::redis::OnError::Deny,
                Some(o) => {
                    let problem = format!("'{o}' is not allow or deny");
                    return Err(cx.err(
                        "redis.on_error",
                        problem,
                        "write `on_error: allow` or `on_error: deny`",
                    ));
                }
            };
            Some(crate::limit::redis::RedisConfig {
                url,
                timeout,
                on_error,
            })
        }
    };
    if redis.is_none() {
        if let Some(i) = rate_limits
            .iter()
            .position(|l| l.scope == crate::limit::Scope::Redis)
        {
            let hint = "add `redis: {url: redis://HOST:6379/0}` or use scope: local";
            return Err(cx.err(
                &format!("rate_limits[{i}].scope"),
                "redis needs a redis: section",
                hint,
            ));
        }
    }
    let slow_start = match &file.slow_start {
        None => Duration::ZERO,
        Some(text) => match parse_duration(text) {
            Ok(d) if d <= Duration::from_secs(3600) => d,
            Ok(_) => {
                let hint = "write at most 1h, e.g. `slow_start: 30s` (0s turns it off)";
                return Err(cx.err("slow_start", "is longer than an hour", hint));
            }
            Err(e) => return Err(cx.err("slow_start", e, "write e.g. `slow_start: 30s`")),
        },
    };
    let pool = sections::pool(&cx, file.pool)?;

    Ok(Config {
        listeners,
        admin,
        admin_token,
        workers,
        mode,
        strategy,
        backends: BackendSet::new(backends),
        health,
        timeouts,
        retries,
        access_log,
        access_log_format,
        access_log_path,
        limits,
        sticky_cookie,
        hash,
        slow_start,
        retry_budget,
        rate_limits,
        queue,
        redis,
        pool,
        insecure: o.insecure,
        discovery,
        resolver,
        log_format,
        log_file,
    })
}

/// Two listeners that cannot both bind: same port on the same or a wildcard address.
fn same_port(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::parse_spec;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// One valid backend, to prefix snippets that test something else.
    pub(super) const B: &str = "backends: [127.0.0.1:9001]\n";

    pub(in crate::config) fn load_with(text: &str, o: &Overrides) -> Result<Config, ConfigError> {
        Config::parse(Path::new("sy.yaml"), text, o)
    }

    pub(in crate::config) fn load(text: &str) -> Result<Config, ConfigError> {
        load_with(text, &Overrides::default())
    }

    /// Asserts `sy.yaml:LINE: KEY: ...fragment... (hint)`.
    pub(super) fn assert_err(text: &str, key: &str, line: Option<usize>, fragment: &str) {
        let e = load(text).expect_err(text);
        let shown = e.to_string();
        assert_eq!((e.key.as_str(), e.line), (key, line), "{shown}");
        let head = match line {
            Some(n) => format!("sy.yaml:{n}: {key}: "),
            None => format!("sy.yaml: {key}: "),
        };
        assert!(shown.starts_with(&head), "{shown}");
        assert!(shown.contains(fragment), "{shown}");
        assert!(e.hint.is_some() && shown.ends_with(')'), "{shown}");
    }

    /// [`assert_err`] for a one-key snippet after [`B`] (so the key is on line 2 or 3).
    pub(super) fn assert_errs(cases: &[(&str, &str, &str)]) {
        for (text, key, fragment) in cases {
            let line = if text.contains('\n') { 3 } else { 2 };
            assert_err(&format!("{B}{text}\n"), key, Some(line), fragment);
        }
    }

    fn cli_backends(specs: &[&str]) -> Overrides {
        let backends = specs.iter().map(|s| parse_spec(s).unwrap()).collect();
        Overrides {
            backends,
            ..Overrides::default()
        }
    }

    #[test]
    fn defaults() {
        let c = Config::from_overrides(&cli_backends(&["127.0.0.1:9001"])).unwrap();
        assert_eq!(c.listen(), "0.0.0.0:8080".parse().unwrap());
        assert_eq!((c.admin, c.strategy), (None, StrategyKind::RoundRobin));
        assert!(c.workers >= 1);
        let mode = if cfg!(target_os = "linux") {
            Mode::Process
        } else {
            Mode::Thread
        };
        assert_eq!(c.mode, mode);
        let h = &c.health;
        assert_eq!(
            (h.path.as_str(), h.interval, h.timeout),
            ("/", secs(5), secs(2))
        );
        assert_eq!(
            (h.unhealthy_threshold, h.healthy_threshold, h.passive_5xx),
            (3, 2, false)
        );
        let t = &c.timeouts;
        assert_eq!(
            (t.connect, t.client_header, t.backend_response),
            (secs(2), secs(10), secs(30))
        );
        assert_eq!((t.client_idle, t.drain), (secs(60), secs(30)));
        assert_eq!((c.retries, c.access_log, c.insecure), (2, false, false));
        let l = &c.limits;
        assert_eq!(
            (l.request_line, l.header_section, l.headers),
            (8192, 65536, 100)
        );
        assert_eq!(c.sticky_cookie, "SWITCHYARD_BACKEND");
        assert_eq!(
            (c.pool.max_idle_per_backend, c.pool.idle_timeout),
            (64, secs(60))
        );
    }

    #[test]
    fn contract_example_builds() {
        // api.example.com is not resolvable offline; a local name keeps the TLS backend.
        let text = crate::config::file::tests::CONTRACT.replace("api.example.com", "localhost");
        let c = load(&text).unwrap();
        assert_eq!((c.workers, c.mode, c.backends.len()), (1, Mode::Thread, 2));
        assert_eq!(c.backends.get(1).scheme, crate::backend::Scheme::Https);
        assert_eq!(c.admin, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(c.backends.get(0).weight, 2);
    }

    #[test]
    fn the_example_file_builds() {
        let c = load(include_str!("../../examples/switchyard.yaml")).unwrap();
        assert_eq!(c.strategy, StrategyKind::WeightedRoundRobin);
        let weights: Vec<u32> = c.backends.iter().map(|b| b.weight).collect();
        assert_eq!(weights, [2, 1]);
        assert_eq!(c.backends.get(1).address, "127.0.0.1:9002");
    }

    #[test]
    fn json_builds() {
        let text =
            r#"{"backends": ["127.0.0.1:9001"], "retries": 0, "health": {"interval": "1.5s"}}"#;
        let c = load(text).unwrap();
        assert_eq!(
            (c.retries, c.health.interval),
            (0, Duration::from_millis(1500))
        );
    }

    #[test]
    fn names_and_counts() {
        assert_errs(&[
            ("strategy: fastest", "strategy", StrategyKind::NAMES),
            (
                "mode: fork",
                "mode",
                "use `mode: process` or `mode: thread`",
            ),
            ("workers: 0", "workers", "from 1 to 1024"),
            ("workers: 1025", "workers", "too large"),
            ("retries: 8", "retries", "at most 7 retries"),
        ]);
        assert_eq!(load(&format!("{B}retries: 7\n")).unwrap().retries, 7);
    }

    #[test]
    fn listen_and_admin_addresses() {
        assert_errs(&[
            ("listen: 8080", "listen", "e.g. `listen: 0.0.0.0:8080`"),
            (
                "listen: localhost:8080",
                "listen",
                "not an ADDR:PORT address",
            ),
            ("listen:\n  address: x", "listen.address", "ADDR:PORT"),
            ("admin: 127.0.0.1", "admin", "e.g. `admin: 127.0.0.1:9090`"),
        ]);
        let t = format!("{B}listen:\n  address: 0.0.0.0:8443\n  tls: {{certificates: []}}\n");
        assert_err(
            &t,
            "listen.tls.certificates",
            Some(4),
            "no certificate given",
        );
        let t = format!(
            "{B}listen:\n  address: 0.0.0.0:8443\n  tls: {{certificates: [{{cert: /nope.pem, key: /nope.key}}]}}\n"
        );
        assert_err(
            &t,
            "listen.tls.certificates[0].cert",
            Some(4),
            "cannot read",
        );
        let t = format!("{B}listen: 0.0.0.0:8080\nadmin: 127.0.0.1:8080\n");
        assert_err(&t, "admin", Some(3), "clashes with the listen address");
        let t = format!("{B}listen: {{address: 127.0.0.1:81}}\nadmin: 127.0.0.1:82\n");
        let c = load(&t).unwrap();
        assert_eq!(
            (c.listen().port(), c.admin.map(|a| a.port())),
            (81, Some(82))
        );
    }

    #[test]
    fn overrides_win() {
        let text = "listen: 127.0.0.1:1\nstrategy: random\nworkers: 3\nmode: process\n\
                    access_log: false\nbackends: [no-such-host.invalid:80]\n";
        let o = Overrides {
            listen: Some("127.0.0.1:2".parse().unwrap()),
            strategy: Some(StrategyKind::Sticky),
            workers: Some(5),
            mode: Some(Mode::Thread),
            access_log: true,
            insecure: true,
            ..cli_backends(&["127.0.0.1:9001", "127.0.0.1:9002,weight=4"])
        };
        let c = load_with(text, &o).unwrap();
        assert_eq!((c.listen().port(), c.strategy), (2, StrategyKind::Sticky));
        assert_eq!((c.workers, c.mode), (5, Mode::Thread));
        let addrs: Vec<&str> = c.backends.iter().map(|b| b.address.as_str()).collect();
        assert_eq!(addrs, ["127.0.0.1:9001", "127.0.0.1:9002"]);
        assert_eq!(c.backends.get(1).weight, 4);
        assert!(c.access_log && c.insecure);
    }

    #[test]
    fn command_line_errors_name_the_flag_not_the_file() {
        let o = Overrides {
            workers: Some(0),
            ..cli_backends(&["127.0.0.1:9001"])
        };
        assert!(
            load_with("", &o)
                .unwrap_err()
                .to_string()
                .starts_with("--workers: 0 is too small")
        );
        let o = Overrides {
            admin: Some("127.0.0.1:8080".parse().unwrap()),
            ..Overrides::default()
        };
        let e = load_with(&format!("{B}listen: 127.0.0.1:8080\n"), &o).unwrap_err();
        assert!(
            e.to_string().starts_with("--admin: 127.0.0.1:8080 clashes"),
            "{e}"
        );
    }

    #[test]
    fn offline_check_reads_no_file_and_resolves_no_name() {
        let contract = crate::config::file::tests::CONTRACT;
        assert!(Config::check_offline(contract).is_ok());
        let tls = format!(
            "{B}listen:\n  address: 127.0.0.1:8443\n  tls:\n    certificates:\n      \
             - {{cert: /nonexistent/c.pem, key: /nonexistent/k.pem}}\n"
        );
        assert!(load(&tls).is_err(), "the files are read online");
        assert!(Config::check_offline(&tls).is_ok());
        let ca =
            "backends:\n  - address: 127.0.0.1:9001\n    tls: {ca_file: /nonexistent/ca.pem}\n";
        assert!(load(ca).is_err());
        assert!(Config::check_offline(ca).is_ok());
        // Every other check is the same.
        for bad in [
            format!("{B}workers: 0\n"),
            "backends: []\n".into(),
            "listen: [\n".into(),
        ] {
            assert_eq!(
                Config::check_offline(&bad).map_err(|e| e.to_string()),
                load(&bad)
                    .map(|_| ())
                    .map_err(|e| e.to_string().replace("sy.yaml", "switchyard.yaml")),
                "{bad}"
            );
        }
    }

    #[test]
    fn truncated_files_never_panic() {
        let full = include_str!("../../examples/switchyard.yaml");
        // Offline, resolving api.example.com would wait on DNS for every prefix.
        let contract = crate::config::file::tests::CONTRACT.replace("api.example.com", "localhost");
        for text in [full, contract.as_str()] {
            for (i, _) in text.char_indices() {
                let cut = &text[..i];
                let _ = load(cut);
                let _ = line_of(cut, "backends[1].weight");
            }
        }
    }
}
