//! The config file as written: a serde mirror of the YAML, never used at runtime.
//!
//! Every key is optional and every struct denies unknown keys, so a typo is an error
//! that names the key and its line instead of a silently ignored setting. Values are
//! kept close to the text (durations and names as strings, numbers as `u64`) and
//! checked by `validate`, which can then say what is wrong and what to write.
//! JSON is YAML, so JSON files parse too. [`line_of`] finds the line of a dotted key
//! path in the source text, since serde values keep no spans.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::ConfigError;

mod errors;
mod lines;

pub use errors::example;
pub use lines::line_of;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of config keys (listen:, backends:, ...)"
)]
pub struct FileConfig {
    pub listen: Option<ListenList>,
    pub admin: Option<String>,
    pub admin_token_file: Option<String>,
    pub workers: Option<u64>,
    pub mode: Option<String>,
    pub strategy: Option<String>,
    pub backends: Option<Vec<BackendItem>>,
    pub health: Option<HealthFile>,
    pub timeouts: Option<TimeoutsFile>,
    pub retries: Option<u64>,
    pub access_log: Option<AccessLogFile>,
    pub limits: Option<LimitsFile>,
    pub sticky: Option<StickyFile>,
    pub pool: Option<PoolFile>,
    pub hash: Option<HashFile>,
    #[serde(default, deserialize_with = "text")]
    pub slow_start: Option<String>,
    pub retry_budget: Option<RetryBudgetFile>,
    pub rate_limits: Option<Vec<RateLimitFile>>,
    pub redis: Option<RedisFile>,
    pub queue: Option<QueueFile>,
    pub discovery: Option<Vec<DiscoveryFile>>,
    pub resolver: Option<String>,
    pub log_format: Option<String>,
    pub log_file: Option<String>,
}

/// `listen:` — one entry, or a list of them (each its own address and options).
#[derive(Debug, Default)]
pub struct ListenList {
    pub entries: Vec<ListenFile>,
    /// True when written as a list: keys are then named `listen[i].…`.
    pub list: bool,
}

/// One `listen:` entry — `ADDR:PORT`, or `{address: ADDR:PORT, tls: ...}`.
#[derive(Debug, Default)]
pub struct ListenFile {
    pub address: Option<String>,
    pub tls: Option<ListenTlsFile>,
    pub proxy_protocol: Option<ListenProxyProtocolFile>,
    pub redirect_https: Option<bool>,
    /// True for the short form `ADDR:PORT`.
    pub short: bool,
}

/// The map form of a `listen:` entry.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with `address`, `tls`, `proxy_protocol` and `redirect_https`"
)]
struct ListenMap {
    address: Option<String>,
    tls: Option<ListenTlsFile>,
    proxy_protocol: Option<ListenProxyProtocolFile>,
    redirect_https: Option<bool>,
}

const LISTEN_ENTRY: StringOrMap<ListenMap, ListenFile> = StringOrMap {
    expecting: "ADDR:PORT (e.g. 0.0.0.0:8080) or a map with `address`",
    short: |s| ListenFile {
        address: Some(s.to_owned()),
        short: true,
        ..ListenFile::default()
    },
    long: |m: ListenMap| ListenFile {
        address: m.address,
        tls: m.tls,
        proxy_protocol: m.proxy_protocol,
        redirect_https: m.redirect_https,
        short: false,
    },
};

impl<'de> Deserialize<'de> for ListenFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LISTEN_ENTRY)
    }
}

impl<'de> Deserialize<'de> for ListenList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListenList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("ADDR:PORT, a map with `address`, or a list of those")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenList, E> {
                let one = LISTEN_ENTRY.visit_str(v)?;
                Ok(ListenList {
                    entries: vec![one],
                    list: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<ListenList, A::Error> {
                let one = LISTEN_ENTRY.visit_map(m)?;
                Ok(ListenList {
                    entries: vec![one],
                    list: false,
                })
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<ListenList, A::Error> {
                let mut entries = Vec::new();
                while let Some(e) = s.next_element::<ListenFile>()? {
                    entries.push(e);
                }
                Ok(ListenList {
                    entries,
                    list: true,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `listen.proxy_protocol:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `trusted`")]
pub struct ListenProxyProtocolFile {
    /// CIDRs (or bare addresses) whose connections start with a PROXY header.
    pub trusted: Option<Vec<String>>,
}

/// `listen.tls:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `certificates`")]
pub struct ListenTlsFile {
    pub certificates: Option<Vec<CertificateFile>>,
}

/// One `listen.tls.certificates` item.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `cert` and `key`")]
pub struct CertificateFile {
    pub cert: String,
    pub key: String,
}

/// One `backends:` item: `HOST:PORT[,weight=N]` or `{address, name, weight, tls, ...}`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with `address`, `name`, `weight`, `tls`, `protocol`"
)]
pub struct BackendFile {
    pub address: Option<String>,
    /// Shown in logs, `/backends` and as the `name` metric label (long form only).
    pub name: Option<String>,
    pub weight: Option<u64>,
    pub tls: Option<BackendTlsFile>,
    pub protocol: Option<String>,
    pub max_connections: Option<u64>,
    pub proxy_protocol: Option<String>,
    /// True when the item was the short string form (its weight is in `address`).
    #[serde(skip)]
    pub short: bool,
}

/// A `backends:` item in either form.
#[derive(Debug, Default)]
pub struct BackendItem(pub BackendFile);

impl<'de> Deserialize<'de> for BackendItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StringOrMap {
            expecting: "HOST:PORT[,weight=N] or a map with `address`",
            short: |s| {
                BackendItem(BackendFile {
                    address: Some(s.to_owned()),
                    short: true,
                    ..BackendFile::default()
                })
            },
            long: BackendItem,
        })
    }
}

/// `backends[].tls:` (parsed so typos are caught; validation rejects it for now).
#[allow(dead_code)] // read once TLS arrives; parsed now so typos are caught
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `ca_file` and `insecure`")]
pub struct BackendTlsFile {
    pub ca_file: Option<String>,
    pub insecure: Option<bool>,
}

/// `health:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map of health settings")]
pub struct HealthFile {
    pub path: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub interval: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub timeout: Option<String>,
    pub unhealthy_threshold: Option<u64>,
    pub healthy_threshold: Option<u64>,
    pub passive_5xx: Option<bool>,
    pub probes: Option<bool>,
    #[serde(default, deserialize_with = "text")]
    pub expect_status: Option<String>,
}

/// `timeouts:`, each a duration string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map of durations")]
pub struct TimeoutsFile {
    #[serde(default, deserialize_with = "text")]
    pub connect: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub client_header: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub backend_response: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub client_idle: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub drain: Option<String>,
}

/// `limits:`, in bytes or lines.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map of limits")]
pub struct LimitsFile {
    pub request_line: Option<u64>,
    pub header_section: Option<u64>,
    pub headers: Option<u64>,
    pub connections_per_client: Option<u64>,
}

/// `hash:` (for `strategy: consistent-hash`).
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with `key`, `table_size` and `load_factor`"
)]
pub struct HashFile {
    pub key: Option<String>,
    pub table_size: Option<u64>,
    pub load_factor: Option<f64>,
}

/// `queue:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `size` and `timeout`")]
pub struct QueueFile {
    pub size: Option<u64>,
    #[serde(default, deserialize_with = "text")]
    pub timeout: Option<String>,
}

/// One `discovery:` item: exactly one of `dns`, `srv`, `etcd`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with one of `dns`, `srv` or `etcd` (and `weight`)"
)]
pub struct DiscoveryFile {
    pub dns: Option<String>,
    pub srv: Option<String>,
    pub etcd: Option<EtcdFile>,
    pub weight: Option<u64>,
}

/// `discovery[N].etcd:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `endpoints` and `prefix`")]
pub struct EtcdFile {
    pub endpoints: Option<Vec<String>>,
    pub prefix: Option<String>,
}

/// `access_log:`: `true`/`false`, or `{path, format}`.
#[derive(Debug, PartialEq)]
pub enum AccessLogFile {
    On(bool),
    Map(AccessLogMap),
}

impl<'de> Deserialize<'de> for AccessLogFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BoolOrMap;
        impl<'de> Visitor<'de> for BoolOrMap {
            type Value = AccessLogFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false, or a map with `path` and `format` (combined | json)")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AccessLogFile, E> {
                Ok(AccessLogFile::On(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<AccessLogFile, A::Error> {
                AccessLogMap::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(AccessLogFile::Map)
            }
        }
        d.deserialize_any(BoolOrMap)
    }
}

/// The map form of `access_log:`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogMap {
    pub path: Option<String>,
    pub format: Option<String>,
}

/// `redis:`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with `url`, `timeout` and `on_error`"
)]
pub struct RedisFile {
    pub url: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub timeout: Option<String>,
    pub on_error: Option<String>,
}

/// One `rate_limits:` item.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with `name`, `key`, `rate`, `burst` and `scope`"
)]
pub struct RateLimitFile {
    pub name: Option<String>,
    pub key: Option<String>,
    #[serde(default, deserialize_with = "text")]
    pub rate: Option<String>,
    pub burst: Option<u64>,
    pub scope: Option<String>,
}

/// `retry_budget:`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with `ratio` and `min_per_second`"
)]
pub struct RetryBudgetFile {
    pub ratio: Option<f64>,
    pub min_per_second: Option<u64>,
}

/// `sticky:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a map with `cookie`")]
pub struct StickyFile {
    pub cookie: Option<String>,
}

/// `pool:`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a map with `max_idle_per_backend` and `idle_timeout`"
)]
pub struct PoolFile {
    pub max_idle_per_backend: Option<u64>,
    #[serde(default, deserialize_with = "text")]
    pub idle_timeout: Option<String>,
}

/// A string, or a number kept as its text (so `interval: 5` reaches validation and
/// gets "has no unit" rather than a type error).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration like 250ms, 5s or 1m")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_owned()))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(Text)
}

/// Short-or-long form, written by hand: an untagged enum would replace the inner
/// error (e.g. an unknown key in a backend map) with "did not match any variant".
struct StringOrMap<M, T> {
    expecting: &'static str,
    short: fn(&str) -> T,
    long: fn(M) -> T,
}

impl<'de, M: Deserialize<'de>, T> Visitor<'de> for StringOrMap<M, T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.short)(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<T, A::Error> {
        M::deserialize(de::value::MapAccessDeserializer::new(m)).map(self.long)
    }
}

impl FileConfig {
    /// Parses YAML (or JSON) text. Empty text, or only comments, is an empty config.
    /// Text over the size cap or nested too deeply is refused before the YAML parser
    /// sees it ([`super::input::check`]).
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        super::input::check(text)?;
        serde_yaml_ng::from_str(text).map_err(|e| errors::from_yaml(text, &e))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The `## Config file` block of the contract, as written there.
    pub(crate) const CONTRACT: &str = "\
listen: 127.0.0.1:8080
admin: 127.0.0.1:9090
workers: 1
mode: thread
strategy: round-robin
backends:
  - address: 127.0.0.1:9001
    weight: 2
  - address: https://api.example.com
health:
  path: /
  interval: 5s
  timeout: 2s
  unhealthy_threshold: 3     # consecutive failures (probes or live requests) -> down
  healthy_threshold: 2       # consecutive successes -> up
timeouts:
  connect: 2s
  client_header: 10s         # whole request head must arrive in this time
  backend_response: 30s      # time to first response byte from the backend
  client_idle: 60s           # idle keep-alive client connection
  drain: 30s                 # graceful shutdown: longest wait for in-flight requests
retries: 2                   # extra attempts on another backend (see Failover)
access_log: false
";

    #[test]
    fn parses_the_contract_example() {
        let f = FileConfig::parse(CONTRACT).unwrap();
        let l = &f.listen.unwrap().entries[0];
        assert_eq!(
            (l.address.as_deref(), l.short),
            (Some("127.0.0.1:8080"), true)
        );
        assert_eq!(f.mode.as_deref(), Some("thread"));
        let b = f.backends.unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].0.weight, Some(2));
        assert_eq!(b[1].0.address.as_deref(), Some("https://api.example.com"));
        let h = f.health.unwrap();
        assert_eq!(h.interval.as_deref(), Some("5s"));
        assert_eq!(h.unhealthy_threshold, Some(3));
        assert_eq!(f.timeouts.unwrap().drain.as_deref(), Some("30s"));
        assert_eq!(
            (f.retries, f.access_log),
            (Some(2), Some(AccessLogFile::On(false)))
        );
    }

    #[test]
    fn parses_the_contract_tls_forms() {
        let text = "\
listen:
  address: 0.0.0.0:8443
  tls:
    certificates:
      - {cert: certs/example.pem, key: certs/example.key}
backends:
  - address: https://api.example.com
    tls: {ca_file: certs/internal-ca.pem}
  - address: 10.0.0.7:8443
    tls: {insecure: true}
  - address: 10.0.0.8:8080
    protocol: h2c
";
        let f = FileConfig::parse(text).unwrap();
        let l = &f.listen.unwrap().entries[0];
        assert!(!l.short && l.tls.is_some());
        let b = f.backends.unwrap();
        assert_eq!(b[2].0.protocol.as_deref(), Some("h2c"));
        assert!(b[1].0.tls.as_ref().and_then(|t| t.insecure).unwrap());
    }

    #[test]
    fn short_backend_items_and_numeric_durations() {
        let f =
            FileConfig::parse("backends: [a:1, 'b:2,weight=3']\nhealth: {interval: 5}\n").unwrap();
        let b = f.backends.unwrap();
        assert!(b[0].0.short && b[1].0.short);
        assert_eq!(b[1].0.address.as_deref(), Some("b:2,weight=3"));
        assert_eq!(f.health.unwrap().interval.as_deref(), Some("5"));
    }

    #[test]
    fn json_is_accepted() {
        let text = r#"{"listen": "127.0.0.1:8080", "backends": [{"address": "127.0.0.1:9001", "weight": 2}],
            "timeouts": {"connect": "1s"}, "access_log": true}"#;
        let f = FileConfig::parse(text).unwrap();
        assert_eq!(f.backends.unwrap()[0].0.weight, Some(2));
        assert_eq!(f.access_log, Some(AccessLogFile::On(true)));
    }

    #[test]
    fn empty_and_comment_only_files_are_empty_configs() {
        for text in ["", "\n\n", "# nothing here\n  # still nothing\n", "---\n"] {
            let f = FileConfig::parse(text).unwrap();
            assert!(f.listen.is_none() && f.backends.is_none(), "{text:?}");
        }
    }

    #[test]
    fn the_example_file_parses() {
        let f = FileConfig::parse(include_str!("../../examples/switchyard.yaml")).unwrap();
        assert_eq!(f.backends.map(|b| b.len()), Some(2));
        assert!(f.pool.and_then(|p| p.idle_timeout).is_some());
    }
}
