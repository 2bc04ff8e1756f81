//! Backend health: one breaker per backend, fed by live requests and active probes.
//!
//! [`HealthTable`] (in `state.rs`) maps a snapshot's backends to slots in the shared
//! [`Region`] (`shared.rs`, all atomics, made before any worker exists): when any worker
//! or the prober marks a backend down, all workers stop picking it at once, and a reload
//! that keeps a backend keeps its state. [`breaker`] is the pure state machine;
//! [`probe`] runs the active checks (one prober per process, not per worker).
//! [`admin`] is what the admin API sets per backend (drained, weight override), kept in
//! the same slots.

pub mod admin;
pub mod breaker;
pub mod probe;
pub mod shared;
mod state;
mod status;

pub use admin::AdminState;
pub use breaker::{Source, Thresholds};
pub use shared::{Region, monotonic_ms};
pub use state::{HealthTable, InFlightGuard, ROOM, Reason};
pub use status::StatusRanges;
