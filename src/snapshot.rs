//! A snapshot: everything one config generation serves with.
//!
//! The validated [`Config`] and its [`HealthTable`] view of the shared region, built
//! once per generation and shared (`Arc`) by everything that serves with it: workers'
//! proxies, the prober and the admin listener. It lives below the server so those
//! mechanism modules can take one without importing the server that publishes it.

use std::sync::Arc;

use crate::config::Config;
use crate::health::{HealthTable, Region};

/// Everything one config generation serves with.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub health: Arc<HealthTable>,
    /// 0 for the first config, +1 per reload.
    pub generation: u64,
    /// Each listener's rustls settings (`None` for plain HTTP), built from its
    /// `tls` in `config.listeners`.
    pub tls: Vec<Option<Arc<rustls::ServerConfig>>>,
}

impl Snapshot {
    /// The snapshot of `config`. Its TLS settings are built from the certificate
    /// files, which validation just read; should they fail now (replaced in between),
    /// `previous`'s are kept, so a TLS port never serves plaintext. With no previous
    /// settings to keep, that is an error.
    pub fn build(
        region: &'static Region,
        config: Arc<Config>,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, String> {
        let mut tls = Vec::with_capacity(config.listeners.len());
        for (n, l) in config.listeners.iter().enumerate() {
            let Some(t) = &l.tls else {
                tls.push(None);
                continue;
            };
            tls.push(match crate::tls::server::server_config(&t.certificates) {
                Ok(c) => Some(c),
                Err((i, which, e)) => {
                    let why = format!("listen[{n}].tls.certificates[{i}].{which}: {e}");
                    match previous.and_then(|p| p.tls.get(n).cloned().flatten()) {
                        Some(kept) => {
                            tracing::error!("{why}; keeping the certificates in use");
                            Some(kept)
                        }
                        None => return Err(why),
                    }
                }
            });
        }
        let mut s = Snapshot::new(region, config, generation);
        s.tls = tls;
        Ok(s)
    }

    /// A snapshot without TLS settings (see [`Snapshot::build`]).
    pub fn new(region: &'static Region, config: Arc<Config>, generation: u64) -> Snapshot {
        // Backends a reload adds ramp up (slow start); those there at start do not.
        let health = Arc::new(HealthTable::with_new(
            region,
            &config.backends,
            config.health.thresholds(),
            generation > 0,
        ));
        Snapshot {
            config,
            health,
            generation,
            tls: Vec::new(),
        }
    }
}
