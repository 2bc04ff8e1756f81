//! examples/grafana/switchyard.json only charts metrics a live /metrics exports.

use crate::support::client::get;
use crate::support::process::{Proc, serving};
use crate::support::{TestBackend, dead_port};

/// Every `switchyard_*` name in the dashboard's queries, sorted, once each.
fn queried_metrics() -> Vec<String> {
    let text = include_str!("../../examples/grafana/switchyard.json");
    let dash: serde_json::Value = serde_json::from_str(text).expect("the dashboard is JSON");
    let mut names = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("switchyard_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                names.push(name);
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let names = queried_metrics();
    assert!(names.len() >= 10, "{names:?}");
    let be = TestBackend::named("b");
    let (listen, admin) = (dead_port(), dead_port());
    let dir = crate::support::Scratch::new("sy-dash");
    let path = dir.join("lb.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: {listen}\nadmin: {admin}\nworkers: 1\nmode: thread\n\
             backends: [{}]\nrate_limits: [{{name: all, key: global, rate: 1/h}}]\n",
            be.addr
        ),
    )
    .unwrap();
    let _p = Proc::with_config(&path);
    assert!(serving(listen) && serving(admin));
    // One proxied request and one the balancer answers itself (over the limit).
    assert_eq!(get(listen, "/").status, 200);
    assert_eq!(get(listen, "/").status, 429);
    let metrics = get(admin, "/metrics").text();
    let exported: Vec<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for name in &names {
        assert!(
            exported.contains(&name.as_str()),
            "the dashboard queries {name}, which /metrics does not export:\n{metrics}"
        );
    }
}
