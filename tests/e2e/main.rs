//! End-to-end tests: real TCP, real backends started by the test, the balancer
//! running in-process (or as the built binary for CLI tests), raw HTTP/1.1 clients.

// Test support records what backends saw behind a Mutex; no request path here.
#![allow(clippy::disallowed_types)]

mod support;

mod admin;
mod admin_write;
mod backend_names;
mod cli;
mod dashboard;
mod discovery;
mod errors;
mod framing;
mod health;
mod limits;
mod listeners;
mod logs;
mod parking;
mod pool;
mod process;
mod proxy_protocol;
mod proxying;
mod redis;
mod regressions;
mod reload;
mod strategies;
mod tls;
mod upgrade;
mod websocket;
mod workers;
