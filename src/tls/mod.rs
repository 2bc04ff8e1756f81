//! TLS with rustls: to backends ([`client`]). Termination on the listener comes later.

pub mod client;
