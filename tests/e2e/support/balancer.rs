//! Runs switchyard in-process on 127.0.0.1:0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard::backend::parse_spec;
use switchyard::balance::StrategyKind;
use switchyard::config::{Config, Mode, Overrides};
use switchyard::server::{self, Running};

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

    /// Active probes every `every` (timeout `every`), with the default thresholds.
    pub fn probes(self, every: Duration) -> Balancer {
        self.with(move |c| {
            c.health.probes = true;
            c.health.interval = every;
            c.health.timeout = every;
        })
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
        let listeners = server::listener::bind(config.listen, config.workers).expect("bind");
        let running = server::start(Arc::clone(&config), listeners).expect("start");
        Started {
            addr: running.local_addr(),
            config,
            running: Some(running),
        }
    }
}
