//! The validated configuration: what the balancer runs with.
//!
//! The YAML file is parsed into a serde mirror ([`file::FileConfig`], never used at
//! runtime), merged with the command-line [`Overrides`], and turned into a
//! [`Config`] by [`validate`]. A `Config` cannot hold a bad value: every backend
//! is parsed and resolved, every duration is positive, every limit is sane.
//! Errors are [`ConfigError`]s that name the file, line, key, problem and a hint.

mod admin_token;
pub mod diff;
mod duration;
mod file;
pub mod input;
pub mod reload;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::{BackendSet, BackendSpec};
use crate::balance::StrategyKind;
pub use crate::tls::server::CertificatePaths;
pub use admin_token::AdminToken;

pub use duration::parse_duration;

/// Process (master + forked workers) or thread (one process, N runtimes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Process,
    Thread,
}

/// `health:` section.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub passive_5xx: bool,
    /// Run active probes (`health.probes`, default true).
    pub probes: bool,
    /// Statuses a probe counts as success (`health.expect_status`, default `200-399`).
    pub expect_status: crate::health::StatusRanges,
}

impl HealthConfig {
    pub fn thresholds(&self) -> crate::health::Thresholds {
        crate::health::Thresholds {
            unhealthy: self.unhealthy_threshold,
            healthy: self.healthy_threshold,
        }
    }
}

/// `timeouts:` section.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    pub client_header: Duration,
    pub backend_response: Duration,
    pub client_idle: Duration,
    pub drain: Duration,
}

/// `limits:` section: what a request head may hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Longest request line (method, target, version) in bytes; beyond it, 414.
    pub request_line: usize,
    /// Largest header section in bytes (names + values); beyond it, 431.
    pub header_section: usize,
    /// Most header lines; beyond it, 431.
    pub headers: usize,
    /// Open connections per client address, all workers together; 0 = no cap.
    pub connections_per_client: u32,
}

/// `pool:` section: idle keep-alive connections to backends, per worker and backend.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    pub max_idle_per_backend: usize,
    pub idle_timeout: Duration,
}

/// `listen.tls`: certificates for TLS termination, chosen by SNI (the first is the
/// default). Plain data: validation proves the files load (so a config that holds a
/// `ListenTls` can serve TLS), and each generation's [`crate::snapshot::Snapshot`]
/// builds the rustls settings from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenTls {
    pub certificates: Vec<CertificatePaths>,
}

impl ListenTls {
    /// Checks that every certificate and key loads; the error names the item (its
    /// index), the file (`cert` or `key`) and what is wrong.
    pub fn load(
        certificates: Vec<CertificatePaths>,
    ) -> Result<ListenTls, (usize, &'static str, String)> {
        crate::tls::server::server_config(&certificates)?;
        Ok(ListenTls { certificates })
    }
}

/// One `listen:` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub address: SocketAddr,
    /// TLS termination (HTTP/1.1 and HTTP/2 by ALPN).
    pub tls: Option<ListenTls>,
    /// `proxy_protocol.trusted`: these peers must start with a PROXY header, others
    /// must not. `None`: no PROXY protocol on this listener.
    pub proxy_protocol: Option<Vec<crate::proxy_protocol::Cidr>>,
    /// `redirect_https: true`: every request (but ACME challenges) is answered with a
    /// 308 to this port (the first TLS listener's) on the same host and path.
    pub redirect_https: Option<u16>,
}

impl Listener {
    /// A plain HTTP listener with no options.
    pub fn plain(address: SocketAddr) -> Listener {
        Listener {
            address,
            tls: None,
            proxy_protocol: None,
            redirect_https: None,
        }
    }
}

impl Config {
    /// The first listener's address (`--listen` sets it; tests bind it to port 0).
    pub fn listen(&self) -> SocketAddr {
        self.listeners[0].address
    }

    /// Every listener's address, in order.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.address).collect()
    }
}

/// `queue:`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueConfig {
    /// Requests waiting at once, all workers together.
    pub size: u64,
    pub timeout: Duration,
}

/// `retry_budget:`: retries may add at most `ratio` to the requests of the last
/// 10 s (all workers together), plus `min_per_second` each second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_per_second: u32,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// `listen:`, in the file's order; never empty.
    pub listeners: Vec<Listener>,
    pub admin: Option<SocketAddr>,
    /// `admin_token_file`, read: admin writes need `Authorization: Bearer TOKEN`.
    /// Re-read on every reload.
    pub admin_token: Option<AdminToken>,
    pub workers: usize,
    pub mode: Mode,
    pub strategy: StrategyKind,
    pub backends: BackendSet,
    pub health: HealthConfig,
    pub timeouts: Timeouts,
    pub retries: u32,
    pub access_log: bool,
    /// `access_log.format` and `.path` (`None`: stderr); see [`crate::access_log`].
    pub access_log_format: crate::access_log::Format,
    pub access_log_path: Option<PathBuf>,
    pub limits: Limits,
    /// Name of the sticky-session cookie (`sticky.cookie`).
    pub sticky_cookie: String,
    /// `hash:` (used by `strategy: consistent-hash`).
    pub hash: crate::balance::HashConfig,
    /// A new or recovered backend's share ramps up over this; zero = off.
    pub slow_start: Duration,
    /// `retry_budget:`; `None`: retries are bounded by `retries` alone.
    pub retry_budget: Option<RetryBudget>,
    /// `rate_limits:`, in order (the first that refuses a request answers it).
    pub rate_limits: Vec<crate::limit::RateLimit>,
    /// `queue:` (requests waiting for a backend under `max_connections`).
    pub queue: QueueConfig,
    /// `redis:` (for `scope: redis` limits).
    pub redis: Option<crate::limit::redis::RedisConfig>,
    pub pool: PoolConfig,
    /// Skip TLS verification for every backend (`-k`); TLS itself arrives later.
    pub insecure: bool,
    /// `discovery:`: sources of more backends (run by the loader, never by workers).
    pub discovery: Vec<crate::discovery::Source>,
    /// `resolver:`: the nameserver DNS discovery asks; `None`: /etc/resolv.conf's.
    pub resolver: Option<SocketAddr>,
    /// `log_format` (or `--log-format`).
    pub log_format: crate::logging::LogFormat,
    /// `log_file`: application log lines go there (reopened on SIGUSR1), else stderr.
    pub log_file: Option<PathBuf>,
}

/// Warns about every backend of `config` that skips certificate verification and did
/// not already in `previous` (the config a reload replaces; `None` at start).
pub fn warn_insecure(previous: Option<&Config>, config: &Config) {
    let was_insecure = |b: &crate::backend::Backend| {
        previous.is_some_and(|p| p.backends.iter().any(|o| o.id == b.id && o.tls.insecure))
    };
    for b in config.backends.iter() {
        if b.scheme == crate::backend::Scheme::Https && b.tls.insecure && !was_insecure(b) {
            tracing::warn!(backend = %b.address, "TLS certificate verification is OFF for this backend");
        }
    }
}

/// Backend addresses resolved by the loader, by normalised `host:port`.
pub type Resolved = std::collections::HashMap<String, Vec<SocketAddr>>;

/// Values given on the command line; each one that is set wins over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub workers: Option<usize>,
    pub mode: Option<Mode>,
    pub strategy: Option<StrategyKind>,
    /// Non-empty: replaces the file's backends.
    pub backends: Vec<BackendSpec>,
    pub access_log: bool,
    pub insecure: bool,
    pub log_format: Option<crate::logging::LogFormat>,
}

/// A configuration problem: `FILE:LINE: KEY: problem (hint)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    /// Dotted key path, e.g. `backends[1].weight`; empty for file-level problems.
    pub key: String,
    pub problem: String,
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
            if let Some(line) = self.line {
                write!(f, "{line}:")?;
            }
            f.write_str(" ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.problem)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Builds a config from the command line alone (no file).
    pub fn from_overrides(overrides: &Overrides) -> Result<Config, ConfigError> {
        validate::build(None, file::FileConfig::default(), overrides)
    }

    /// Reads, parses and validates `path`, then applies `overrides`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::from_bytes(path, &Config::read(path)?, overrides)
    }

    /// Reads `path` for [`Config::from_bytes`]: at most one byte more than a config file
    /// may hold ([`input::MAX_FILE_BYTES`]), however long the file (or device) goes on.
    pub fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
        input::read_file(path).map_err(|e| ConfigError {
            file: Some(path.to_path_buf()),
            line: None,
            key: String::new(),
            problem: format!("cannot read the file: {e}"),
            hint: Some("check the path given to -c/--config".into()),
        })
    }

    /// Parses and validates the bytes read from `path`: refused if over the size cap,
    /// then if not UTF-8, then as [`Config::parse`] refuses text.
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let in_file = |mut e: ConfigError| {
            e.file = Some(path.to_path_buf());
            e
        };
        input::check_size(bytes.len()).map_err(in_file)?;
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let before = bytes.get(..e.valid_up_to()).unwrap_or_default();
            in_file(ConfigError {
                file: None,
                line: Some(1 + before.iter().filter(|&&b| b == b'\n').count()),
                key: String::new(),
                problem: format!("not UTF-8 text: {e}"),
                hint: Some("save the file as UTF-8".into()),
            })
        })?;
        Config::parse(path, text, overrides)
    }

    /// Parses and validates config text that came from `path`.
    pub fn parse(path: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        let parsed = file::FileConfig::parse(text).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })?;
        validate::build(Some((path, text)), parsed, overrides)
    }

    /// Parses and validates config text as [`Config::parse`], taking every backend's
    /// addresses from `resolved` instead of resolving (a worker building the
    /// generation its loader sent).
    pub fn parse_resolved(
        path: &Path,
        text: &str,
        overrides: &Overrides,
        resolved: &Resolved,
    ) -> Result<Config, ConfigError> {
        let parsed = file::FileConfig::parse(text).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })?;
        validate::build_resolved(Some((path, text)), parsed, overrides, resolved)
    }

    /// Every backend's addresses, for [`Config::parse_resolved`] elsewhere.
    pub fn resolved(&self) -> Resolved {
        self.backends
            .iter()
            .map(|b| (b.address.clone(), b.addrs.clone()))
            .collect()
    }

    /// Every problem of the file at `path`, up to `cap` (empty: it is valid). After
    /// each error the line it names is blanked (the rest of the file keeps its line
    /// numbers) and the file is checked again; an error that only follows from an
    /// earlier one (the same key, or its item or section) is not reported again. Stops
    /// at an error with no line, or one on a line already blanked.
    pub fn check_all(path: &Path, overrides: &Overrides, cap: usize) -> Vec<ConfigError> {
        let bytes = match Config::read(path) {
            Ok(b) => b,
            Err(e) => return vec![e],
        };
        let first = match Config::from_bytes(path, &bytes, overrides) {
            Ok(_) => return Vec::new(),
            Err(e) => e,
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return vec![first];
        };
        let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
        let mut blanked = std::collections::HashSet::new();
        let mut errors = vec![first];
        let mut next = errors.first().cloned();
        while let Some(e) = next.take() {
            let Some(line) = e.line.filter(|l| (1..=lines.len()).contains(l)) else {
                break;
            };
            if !blanked.insert(line) || errors.len() >= cap {
                break;
            }
            lines[line - 1].clear();
            match Config::parse(path, &lines.join("\n"), overrides) {
                Ok(_) => break,
                Err(e) => {
                    let follows = |p: &ConfigError| {
                        let under = |a: &str, b: &str| {
                            a == b
                                || a.strip_prefix(b)
                                    .is_some_and(|r| r.starts_with('.') || r.starts_with('['))
                        };
                        under(&e.key, &p.key) || under(&p.key, &e.key)
                    };
                    if !errors.iter().any(follows) {
                        errors.push(e.clone());
                    }
                    next = Some(e);
                }
            }
        }
        errors
    }

    /// Checks config text as [`Config::parse`] does, every key and value, but without
    /// the outside world: backends' host names are not resolved and certificate and
    /// CA files are not read, so a name that does not resolve or a missing file is not
    /// found. For fuzzing the parser (fuzz/fuzz_targets/config.rs), which must never
    /// panic whatever the text.
    pub fn check_offline(text: &str) -> Result<(), ConfigError> {
        let path = Path::new("switchyard.yaml");
        let parsed = file::FileConfig::parse(text).map_err(|mut e| {
            e.file = Some(path.to_path_buf());
            e
        })?;
        validate::build_offline(Some((path, text)), parsed, &Overrides::default()).map(|_| ())
    }
}
