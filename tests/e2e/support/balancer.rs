//! Runs switchyard in-process on 127.0.0.1:0 (thread mode), with the config built in
//! code; `Started` reloads it, drains it, and scrapes its admin listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard::backend::parse_spec;
use switchyard::balance::StrategyKind;
use switchyard::config::{Config, Mode, Overrides};
use switchyard::server::{self, Running};

use crate::support::prometheus::Scrape;

type Tweak = Box<dyn FnOnce(&mut Config)>;

pub struct Balancer {
    backends: Vec<String>,
    strategy: StrategyKind,
    workers: usize,
    tweak: Vec<Tweak>,
}

pub struct Started {
    pub addr: SocketAddr,
    pub config: Arc<Config>,
    running: Option<Running>,
}

impl Started {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The admin listener's address (`Balancer::admin`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.config.admin.expect("started without .admin()")
    }

    /// A scrape of `/metrics`, parsed strictly.
    pub fn metrics(&self) -> Scrape {
        scrape(self.admin_addr())
    }

    /// Starts a graceful drain (as SIGTERM does) on another thread; it returns once
    /// every worker has exited.
    pub fn drain_in_background(&mut self) -> std::thread::JoinHandle<()> {
        let running = self.running.take().expect("running");
        std::thread::spawn(move || running.drain())
    }
}

/// GETs `/metrics` from an admin listener and parses it strictly.
pub fn scrape(admin: SocketAddr) -> Scrape {
    let r = crate::support::client::get(admin, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    Scrape::parse(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()))
}

impl Started {
    /// Reloads with the current config changed by `f` (as a file reload would).
    pub fn reload(&self, f: impl FnOnce(&mut Config)) {
        let running = self.running.as_ref().expect("running");
        let mut config = (*running.snapshot().config).clone();
        f(&mut config);
        running.reload(config);
    }

    /// The health table the workers share; index = position in the backend list.
    pub fn health(&self) -> Arc<switchyard::health::HealthTable> {
        self.running.as_ref().expect("running").health()
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
    }
}

impl Balancer {
    pub fn new() -> Balancer {
        Balancer {
            backends: vec![],
            strategy: StrategyKind::RoundRobin,
            workers: 1,
            tweak: vec![],
        }
    }

    pub fn backend(mut self, addr: SocketAddr) -> Balancer {
        self.backends.push(addr.to_string());
        self
    }

    pub fn weighted(mut self, addr: SocketAddr, weight: u32) -> Balancer {
        self.backends.push(format!("{addr},weight={weight}"));
        self
    }

    pub fn strategy(mut self, s: StrategyKind) -> Balancer {
        self.strategy = s;
        self
    }

    pub fn workers(mut self, n: usize) -> Balancer {
        self.workers = n;
        self
    }

    /// Changes the validated config before start (timeouts, limits, pool...).
    pub fn with(mut self, f: impl FnOnce(&mut Config) + 'static) -> Balancer {
        self.tweak.push(Box::new(f));
        self
    }

    pub fn client_header(self, d: Duration) -> Balancer {
        self.with(move |c| c.timeouts.client_header = d)
    }

    pub fn client_idle(self, d: Duration) -> Balancer {
        self.with(move |c| c.timeouts.client_idle = d)
    }

    pub fn backend_response(self, d: Duration) -> Balancer {
        self.with(move |c| c.timeouts.backend_response = d)
    }

    /// Active probes every `every`, with the default thresholds. The probe timeout is a
    /// generous 2 s: a healthy backend answers in microseconds, and a short timeout would
    /// mark it down whenever the machine is busy.
    pub fn probes(self, every: Duration) -> Balancer {
        self.with(move |c| {
            c.health.probes = true;
            c.health.interval = every;
            c.health.timeout = Duration::from_secs(2);
        })
    }

    /// The admin listener on a free port (see [`Started::metrics`]).
    pub fn admin(self) -> Balancer {
        let admin = crate::support::dead_port();
        self.with(move |c| c.admin = Some(admin))
    }

    pub fn start(self) -> Started {
        if std::env::var_os("SWITCHYARD_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::DEBUG)
                .with_test_writer()
                .try_init();
        }
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".parse().expect("addr")),
            workers: Some(self.workers),
            mode: Some(Mode::Thread),
            strategy: Some(self.strategy),
            backends: self
                .backends
                .iter()
                .map(|b| parse_spec(b).expect("spec"))
                .collect(),
            ..Overrides::default()
        };
        let mut config = Config::from_overrides(&overrides).expect("config");
        // Probes would add requests the tests count; health tests turn them on.
        config.health.probes = false;
        for f in self.tweak {
            f(&mut config);
        }
        let config = Arc::new(config);
        let listeners =
            server::listener::bind_all(&config.listen_addrs(), config.workers).expect("bind");
        let running = server::start(Arc::clone(&config), listeners).expect("start");
        Started {
            addr: running.local_addr(),
            config,
            running: Some(running),
        }
    }
}
