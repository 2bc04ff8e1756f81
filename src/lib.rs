//! switchyard: a fast HTTP/1.1 load balancer and reverse proxy.
//!
//! # Layout
//! - [`cli`]: the command line; flags become config [`config::Overrides`].
//! - [`config`]: YAML file -> serde mirror -> validated [`config::Config`].
//! - [`backend`]: backends as values; stable ids from a fixed-seed hash of the address.
//! - [`server`]: SO_REUSEPORT listeners and workers (one current-thread runtime each).
//! - [`proxy`]: the request path, header rules, bodies and error responses.
//! - [`upstream`]: dialing backends and the per-worker LIFO keep-alive pool.
//! - [`balance`]: one strategy per file behind one small trait.
//! - [`health`]: the lock-free up/down and in-flight table all workers share.
//! - [`demo`]: the built-in echo backend and the one-command demo.
//!
//! # Life of a request
//! 1. A worker accepts on its own listener (`server::worker`), sets TCP_NODELAY, and
//!    serves the connection with hyper under the client idle/header clocks.
//! 2. `proxy::guard` checks the head; bad input is answered 4xx/5xx and goes no further.
//! 3. `proxy::body` reads up to 64 KiB of the body (held whole if it ends there).
//! 4. `proxy::headers` drops hop-by-hop headers and adds X-Forwarded-For/-Proto and Via.
//! 5. `balance` picks an eligible backend from the `health` table.
//! 6. `upstream` sends on a pooled connection (LIFO) or dials a new one.
//! 7. The response head is rewritten and its body streams back to the client.
//! 8. When the body ends, the backend connection returns to the pool.

pub mod access_log;
pub mod admin;
pub mod backend;
pub mod balance;
pub mod cli;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod health;
pub mod http1;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod proxy_protocol;
pub mod server;
pub mod snapshot;
pub mod tls;
pub mod upstream;

use std::sync::Arc;

use config::{Config, Mode};

/// What can stop the program; `main` prints it and exits 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Config(#[from] config::ConfigError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
}

/// Runs the command the user gave.
pub fn run(cli: cli::Cli) -> Result<(), Error> {
    match cli.command {
        Some(cli::Command::Demo { listen, log_level }) => {
            init_logging(log_level);
            demo::run(listen)
        }
        Some(cli::Command::Backend {
            listen,
            name,
            log_level,
            exit_with_parent,
        }) => {
            init_logging(log_level);
            if exit_with_parent {
                exit_when_orphaned();
            }
            let l = server::listener::bind(listen, 1)?.into_iter().next();
            let l = l.ok_or_else(|| Error::Usage("no listener".into()))?;
            let b = demo::EchoBackend::start(l, &name)?;
            eprintln!(
                "switchyard backend '{name}' listening on http://{}/",
                b.addr()
            );
            b.wait();
            Ok(())
        }
        Some(cli::Command::Completions { shell }) => {
            cli::completions(shell, &mut std::io::stdout())?;
            Ok(())
        }
        Some(cli::Command::Manpage) => {
            cli::manpage(&mut std::io::stdout())?;
            Ok(())
        }
        Some(cli::Command::Check { file, config }) => {
            let Some(config) = file.or(config) else {
                return Err(Error::Usage("check needs a config file".into()));
            };
            let mut problems = Config::check_all(&config, &config::Overrides::default(), 50);
            if problems.len() > 1 {
                problems.sort_by_key(|p| p.line);
                for p in &problems {
                    eprintln!("switchyard: error: {p}");
                }
                let n = problems.len();
                let at_most = if n == 50 { " (or more)" } else { "" };
                return Err(Error::Usage(format!(
                    "{n} problems{at_most} in {}",
                    config.display()
                )));
            }
            if let Some(p) = problems.pop() {
                return Err(p.into());
            }
            let c = Config::load(&config, &config::Overrides::default())?;
            let n = c.backends.len();
            let mut what = format!(
                "{n} backend{}, strategy {}",
                if n == 1 { "" } else { "s" },
                c.strategy.name()
            );
            if !c.discovery.is_empty() {
                what += &format!(", {} discovery source(s)", c.discovery.len());
            }
            let listen: Vec<String> = c
                .listeners
                .iter()
                .map(|l| match (&l.tls, l.redirect_https) {
                    (Some(_), _) => format!("{} (TLS)", l.address),
                    (None, Some(port)) => format!("{} (redirect to :{port})", l.address),
                    (None, None) => l.address.to_string(),
                })
                .collect();
            what += &format!(", listen {}", listen.join(", "));
            println!("{}: ok ({what})", config.display());
            Ok(())
        }
        None => {
            let overrides = cli.run.overrides();
            let (config, reload) = match &cli.run.config {
                Some(path) => {
                    let bytes = Config::read(path)?;
                    let config = Config::from_bytes(path, &bytes, &overrides)?;
                    let source = server::control::ReloadSource {
                        path: path.clone(),
                        overrides: overrides.clone(),
                        loaded: bytes,
                    };
                    (config, Some(source))
                }
                None => (Config::from_overrides(&overrides)?, None),
            };
            logging::init(
                cli.run.log_level,
                config.log_format,
                config.log_file.as_deref(),
            )?;
            access_log::configure(config.access_log_format, config.access_log_path.clone());
            serve(config, reload, cli.run.pid_file.as_deref())
        }
    }
}

/// Runs the balancer in the foreground until SIGTERM/SIGINT (then drains, exit 0);
/// reloads on SIGHUP and when the config file changes; SIGUSR2 upgrades the binary.
pub fn serve(
    config: Config,
    reload: Option<server::control::ReloadSource>,
    pid_file: Option<&std::path::Path>,
) -> Result<(), Error> {
    // Read (and cleared) first, before any thread exists.
    let inherited = server::handover::Inherited::from_env()?;
    config::warn_insecure(None, &config);
    // Resolved now: by the time of a SIGUSR2 the file may have been replaced, and
    // /proc/self/exe would then name the deleted one.
    let exe = std::env::current_exe().ok();
    if config.mode == Mode::Process {
        // Before the sockets exist (a signal sent once they accept must not kill us).
        let signals = server::signals::SignalFd::new()?;
        let mut sockets = server::Sockets::open(&config, inherited)?;
        let pid_file = pid_file.map(server::pidfile::PidFile::write).transpose()?;
        let life = server::control::Lifecycle {
            exe,
            pid_file,
            ready: sockets.ready.take(),
        };
        server::master::run(config, reload, sockets, life, signals)?;
        return Ok(());
    }
    let mut control = server::control::Control::new(reload)?;
    let config = control.first_generation(config);
    let mut sockets = server::Sockets::open(&config, inherited)?;
    let config = Arc::new(config);
    let pid_file = pid_file.map(server::pidfile::PidFile::write).transpose()?;
    let life = server::control::Lifecycle {
        exe,
        pid_file,
        ready: sockets.ready.take(),
    };
    let running = server::start_with(Arc::clone(&config), sockets)?;
    tracing::info!(
        listen = ?running.local_addrs(),
        workers = config.workers,
        strategy = config.strategy.name(),
        backends = config.backends.len(),
        "switchyard serving"
    );
    control.run(running, life)?;
    Ok(())
}

/// Exits the process once its parent has gone (it is then re-parented).
fn exit_when_orphaned() {
    let parent = std::os::unix::process::parent_id();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(300));
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
        }
    });
}

fn init_logging(level: tracing::Level) {
    let _ = logging::init(level, logging::LogFormat::Text, None);
}
