//! The command line: `switchyard [OPTIONS]`, `demo`, `backend`, `check`, `completions`,
//! `manpage`.
//!
//! clap parses and validates each flag (a bad value exits 2 with a message saying what
//! to write instead); [`RunArgs::overrides`] turns the flags into config
//! [`Overrides`], which win over the config file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::backend::{BackendSpec, parse_spec};
use crate::balance::StrategyKind;
use crate::config::{Mode, Overrides};

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "A fast HTTP/1.1 and HTTP/2 load balancer and reverse proxy",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Two built-in echo backends and the balancer in front of them.
    Demo {
        /// Where the balancer listens.
        #[arg(short, long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
        listen: SocketAddr,
        #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_log_level)]
        log_level: tracing::Level,
    },
    /// The built-in echo backend: answers JSON describing each request it received.
    Backend {
        #[arg(short, long, value_name = "ADDR:PORT", value_parser = parse_listen)]
        listen: SocketAddr,
        /// Name reported in each answer (`"backend": NAME`, `X-Backend: NAME`).
        #[arg(short, long, default_value = "backend")]
        name: String,
        /// Exit when the parent process exits (used by `demo`).
        #[arg(long, hide = true)]
        exit_with_parent: bool,
        #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_log_level)]
        log_level: tracing::Level,
    },
    /// Validate a config file: exit 0, or exit 2 with a message naming the key.
    Check {
        /// The config file (or give it with -c).
        #[arg(value_name = "FILE", required_unless_present = "config")]
        file: Option<PathBuf>,
        #[arg(short, long, value_name = "FILE", conflicts_with = "file")]
        config: Option<PathBuf>,
    },
    /// Print shell completions (e.g. `switchyard completions bash > /etc/bash_completion.d/switchyard`).
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `switchyard manpage > switchyard.1`.
    Manpage,
}

/// Writes completions for `shell` to `out` (made in memory first: the generator
/// panics on a write error, e.g. a closed pipe).
pub fn completions(
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut cmd, "switchyard", &mut text);
    out.write_all(&text)
}

/// Writes the man page (roff) to `out`.
pub fn manpage(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    clap_mangen::Man::new(cmd).render(out)
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// YAML config file (JSON accepted).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address (replaces the first `listen:` entry's) [default: 0.0.0.0:8080].
    #[arg(short, long, value_name = "ADDR:PORT", value_parser = parse_listen, conflicts_with_all = ["port", "host"])]
    pub listen: Option<SocketAddr>,
    /// Listen port (shorthand for --listen 0.0.0.0:N).
    #[arg(short, long, value_name = "N", value_parser = parse_port)]
    pub port: Option<u16>,
    /// Listen IP, used with --port [default: 0.0.0.0].
    #[arg(long, value_name = "IP", value_parser = parse_ip)]
    pub host: Option<IpAddr>,
    /// Backend: HOST:PORT | http://HOST:PORT | https://HOST[:PORT], optionally ",weight=N". Repeatable.
    #[arg(short, long = "backend", value_name = "SPEC", value_parser = parse_backend)]
    pub backends: Vec<BackendSpec>,
    /// round-robin | weighted-round-robin | random | sticky | least-connections | least-latency | consistent-hash.
    #[arg(short, long, value_name = "NAME", value_parser = parse_strategy)]
    pub strategy: Option<StrategyKind>,
    /// Worker count [default: number of CPUs].
    #[arg(short, long, value_name = "N", value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// process (master + forked workers) | thread (one process).
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub mode: Option<Mode>,
    /// Admin listener for /metrics, /healthz, /backends (off unless given).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub admin: Option<SocketAddr>,
    /// error | warn | info | debug | trace.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: tracing::Level,
    /// Application log lines as `text` (default) or `json`.
    #[arg(long, value_name = "FORMAT", value_parser = parse_log_format)]
    pub log_format: Option<crate::logging::LogFormat>,
    /// One line per request on stderr.
    #[arg(long)]
    pub access_log: bool,
    /// Skip TLS certificate verification for backends.
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// Write the master's pid here (FILE.oldbin during a SIGUSR2 upgrade).
    #[arg(long, value_name = "FILE")]
    pub pid_file: Option<PathBuf>,
}

impl RunArgs {
    /// The flags that override the config file.
    pub fn overrides(&self) -> Overrides {
        let listen = self.listen.or_else(|| match (self.host, self.port) {
            (None, None) => None,
            (h, p) => Some(SocketAddr::new(
                h.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                p.unwrap_or(8080),
            )),
        });
        Overrides {
            listen,
            admin: self.admin,
            workers: self.workers,
            mode: self.mode,
            strategy: self.strategy,
            backends: self.backends.clone(),
            access_log: self.access_log,
            insecure: self.insecure,
            log_format: self.log_format,
        }
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        if !s.contains(':') {
            format!("'{s}' has no port (write ADDR:PORT, e.g. 0.0.0.0:{s} or 127.0.0.1:8080)")
        } else {
            format!("'{s}' is not an IP:PORT address (write e.g. 127.0.0.1:8080 or [::1]:8080)")
        }
    })
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("'{s}' is not a port (write a number from 1 to 65535)"))
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("'{s}' is not an IP address (write e.g. 0.0.0.0 or ::)"))
}

fn parse_backend(s: &str) -> Result<BackendSpec, String> {
    parse_spec(s)
}

fn parse_strategy(s: &str) -> Result<StrategyKind, String> {
    StrategyKind::parse(s).ok_or_else(|| {
        format!(
            "unknown strategy '{s}' (write one of: {})",
            StrategyKind::NAMES
        )
    })
}

fn parse_workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' is not a worker count (write a number from 1 to 1024)"
        )),
    }
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "process" => Ok(Mode::Process),
        "thread" => Ok(Mode::Thread),
        _ => Err(format!("unknown mode '{s}' (write process or thread)")),
    }
}

fn parse_log_format(s: &str) -> Result<crate::logging::LogFormat, String> {
    crate::logging::LogFormat::parse(s).ok_or_else(|| format!("'{s}' is not text or json"))
}

fn parse_log_level(s: &str) -> Result<tracing::Level, String> {
    s.parse()
        .map_err(|_| format!("unknown log level '{s}' (write error, warn, info, debug or trace)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_and_host_make_a_listen_address() {
        let cli = Cli::try_parse_from(["switchyard", "-p", "9000", "-b", "127.0.0.1:1"]).unwrap();
        assert_eq!(
            cli.run.overrides().listen,
            Some("0.0.0.0:9000".parse().unwrap())
        );
        let cli = Cli::try_parse_from(["switchyard", "--host", "127.0.0.1"]).unwrap();
        assert_eq!(
            cli.run.overrides().listen,
            Some("127.0.0.1:8080".parse().unwrap())
        );
    }

    #[test]
    fn bad_values_are_refused_with_a_hint() {
        let e = Cli::try_parse_from(["switchyard", "-s", "fastest"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("round-robin"), "{e}");
        let e = Cli::try_parse_from(["switchyard", "-l", "8080"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ADDR:PORT"), "{e}");
        let e = Cli::try_parse_from(["switchyard", "-b", "h:1,weight=0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("weight"), "{e}");
        assert!(Cli::try_parse_from(["switchyard", "-l", "1.2.3.4:5", "-p", "6"]).is_err());
        assert!(Cli::try_parse_from(["switchyard", "-w", "0"]).is_err());
    }
}
