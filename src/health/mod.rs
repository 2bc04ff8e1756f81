//! Backend health as the request path sees it.
//!
//! [`HealthTable`] holds one slot per backend of a snapshot: an up/down flag and the
//! number of in-flight requests, all atomics, so every worker reads it without a lock.
//! The passive breaker and active probes that flip the flag arrive with the health
//! issue; today every backend starts and stays up unless marked otherwise.

mod state;

pub use state::{HealthTable, InFlightGuard};
