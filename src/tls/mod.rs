//! TLS with rustls: to backends ([`client`]) and on the listener ([`server`]).

pub mod client;
pub mod server;
