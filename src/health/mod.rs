//! Backend health: one breaker per backend, fed by live requests and active probes.
//!
//! [`HealthTable`] (in `state.rs`) holds one slot per backend of a snapshot, all atomics,
//! shared by every worker of the process: when any worker or the prober marks a backend
//! down, all workers stop picking it at once. [`breaker`] is the pure state machine;
//! [`probe`] runs the active checks (one prober per process, not per worker).

pub mod breaker;
pub mod probe;
mod state;
mod status;

pub use breaker::{Source, Thresholds};
pub use state::{HealthTable, InFlightGuard, Reason};
pub use status::StatusRanges;
