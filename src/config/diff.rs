//! What a reload changed, in one line for the log.
//!
//! Backends are compared by address (added, removed, weight or name changed, other
//! settings changed); every other setting by value, named by its key. The loader logs
//! the line once per generation, so an operator sees what a reload (or a discovery
//! update) did without a diff tool.

use super::Config;
use crate::backend::Backend;

/// `backends +10.0.0.3:80 -10.0.0.1:80 10.0.0.2:80 weight 1->3 name api->web; strategy;
/// timeouts`, or `nothing` when the two are the same. A name given or taken away shows
/// as `name +api` / `name -api`.
pub fn describe(old: &Config, new: &Config) -> String {
    let mut parts = Vec::new();
    let mut b = Vec::new();
    for n in new.backends.iter() {
        match old.backends.iter().find(|o| o.address == n.address) {
            None => b.push(format!("+{}", n.address)),
            Some(o) => {
                if let Some(changed) = backend_changes(o, n) {
                    b.push(format!("{} {changed}", n.address));
                }
            }
        }
    }
    for o in old.backends.iter() {
        if !new.backends.iter().any(|n| n.address == o.address) {
            b.push(format!("-{}", o.address));
        }
    }
    if !b.is_empty() {
        parts.push(format!("backends {}", b.join(" ")));
    }
    if old.strategy != new.strategy {
        parts.push(format!(
            "strategy {}->{}",
            old.strategy.name(),
            new.strategy.name()
        ));
    }
    let fields = |c: &Config| {
        [
            ("timeouts", format!("{:?}", c.timeouts)),
            ("health", format!("{:?}", c.health)),
            ("retries", format!("{:?}", c.retries)),
            ("retry_budget", format!("{:?}", c.retry_budget)),
            ("rate_limits", format!("{:?}", c.rate_limits)),
            ("redis", format!("{:?}", c.redis)),
            ("queue", format!("{:?}", c.queue)),
            ("pool", format!("{:?}", c.pool)),
            ("hash", format!("{:?}", c.hash)),
            ("sticky", format!("{:?}", c.sticky_cookie)),
            ("slow_start", format!("{:?}", c.slow_start)),
            ("access_log", format!("{:?}", c.access_log)),
            ("discovery", format!("{:?} {:?}", c.discovery, c.resolver)),
            (
                "listen",
                format!(
                    "{:?}",
                    c.listeners
                        .iter()
                        .map(|l| (&l.tls, &l.proxy_protocol, l.redirect_https))
                        .collect::<Vec<_>>()
                ),
            ),
        ]
    };
    for ((name, a), (_, b)) in fields(old).iter().zip(fields(new).iter()) {
        if a != b {
            parts.push((*name).to_owned());
        }
    }
    if parts.is_empty() {
        return "nothing".into();
    }
    parts.join("; ")
}

/// What changed in a backend kept at the same address: `weight 1->3`, `name a->b`,
/// `settings` (anything else), space-separated; `None` when nothing did.
fn backend_changes(o: &Backend, n: &Backend) -> Option<String> {
    let mut c = Vec::new();
    if o.weight != n.weight {
        c.push(format!("weight {}->{}", o.weight, n.weight));
    }
    match (&o.name, &n.name) {
        (Some(a), Some(b)) if a != b => c.push(format!("name {a}->{b}")),
        (None, Some(b)) => c.push(format!("name +{b}")),
        (Some(a), None) => c.push(format!("name -{a}")),
        _ => {}
    }
    let rest = |b: &Backend| Backend {
        weight: 0,
        name: None,
        ..b.clone()
    };
    if rest(o) != rest(n) {
        c.push("settings".into());
    }
    (!c.is_empty()).then(|| c.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::tests::load;

    #[test]
    fn names_what_changed() {
        let a = load("backends: [127.0.0.1:9001, '127.0.0.1:9002,weight=2']\n").unwrap();
        let b = load(
            "backends: ['127.0.0.1:9002,weight=3', 127.0.0.1:9003]\nstrategy: random\n\
             timeouts: {connect: 1s}\n",
        )
        .unwrap();
        assert_eq!(
            describe(&a, &b),
            "backends 127.0.0.1:9002 weight 2->3 +127.0.0.1:9003 -127.0.0.1:9001; \
             strategy round-robin->random; timeouts"
        );
        assert_eq!(describe(&a, &a), "nothing");
    }

    #[test]
    fn names_renamed_backends() {
        let a = load(
            "backends:\n  - {address: 127.0.0.1:9001, name: api}\n  - 127.0.0.1:9002\n\
             \x20 - {address: 127.0.0.1:9003, name: old}\n",
        )
        .unwrap();
        let b = load(
            "backends:\n  - {address: 127.0.0.1:9001, name: web, weight: 2}\n\
             \x20 - {address: 127.0.0.1:9002, name: new}\n  - 127.0.0.1:9003\n",
        )
        .unwrap();
        assert_eq!(
            describe(&a, &b),
            "backends 127.0.0.1:9001 weight 1->2 name api->web 127.0.0.1:9002 name +new \
             127.0.0.1:9003 name -old"
        );
        let c =
            load("backends:\n  - {address: 127.0.0.1:9001, name: api, protocol: h2c}\n").unwrap();
        let d = load("backends:\n  - {address: 127.0.0.1:9001, name: api2}\n").unwrap();
        assert_eq!(
            describe(&c, &d),
            "backends 127.0.0.1:9001 name api->api2 settings"
        );
    }
}
