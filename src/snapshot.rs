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
}

impl Snapshot {
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
        }
    }
}
