//! switchyard: a fast HTTP/1.1 load balancer and reverse proxy.

pub mod backend;
pub mod balance;
pub mod config;
pub mod health;
