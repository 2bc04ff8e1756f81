//! A small, strict parser for the Prometheus text exposition format (0.0.4), so the
//! admin tests check `/metrics` the way a scraper reads it without any tool outside
//! `cargo test` (the suite used to install Python's prometheus_client at run time).
//!
//! It rejects what Prometheus would: bad metric or label names, bad escapes in label
//! values, unparsable values, a `# TYPE` after its family's samples or twice, samples
//! of a family split into groups, duplicate series, a missing final newline, and
//! histograms whose buckets are unsorted, not cumulative, lack `+Inf`, or disagree
//! with `_count`. Queries then read values by name and exact label set.

use std::collections::{HashMap, HashSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// Label (name, value) pairs.
pub type Labels = Vec<(String, String)>;

#[derive(Clone, Debug)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct Family {
    pub name: String,
    pub help: Option<String>,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

#[derive(Clone, Debug)]
pub struct Scrape {
    pub families: Vec<Family>,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) => s.parse().ok(),
        _ => None,
    }
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("expected '{'")?;
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        if labels.iter().any(|(k, _)| k == name) {
            return Err(format!("label {name:?} twice"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape in label value: {other:?}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// The family a sample named `name` belongs to, given the declared kinds.
fn family_of<'a>(name: &'a str, kinds: &HashMap<String, Kind>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(kinds.get(base), Some(Kind::Histogram | Kind::Summary)) {
                return base;
            }
        }
    }
    name
}

impl Scrape {
    pub fn parse(text: &str) -> Result<Scrape, String> {
        if !text.is_empty() && !text.ends_with('\n') {
            return Err("the exposition must end with a newline".into());
        }
        let mut families: Vec<Family> = Vec::new();
        let mut kinds: HashMap<String, Kind> = HashMap::new();
        let mut helped: HashSet<String> = HashSet::new();
        let mut closed: HashSet<String> = HashSet::new();
        let mut series: HashSet<(String, Labels)> = HashSet::new();
        let mut current: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
            if line.trim().is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                let (keyword, name, rest) = (words.next(), words.next(), words.next());
                if !matches!(keyword, Some("HELP" | "TYPE")) {
                    continue; // a plain comment
                }
                let name = name.ok_or_else(|| at("no metric name".into()))?;
                if !is_metric_name(name) {
                    return Err(at(format!("bad metric name {name:?}")));
                }
                if closed.contains(name) {
                    return Err(at(format!("{name} declared after its samples ended")));
                }
                if current.as_deref() != Some(name) {
                    if let Some(c) = current.take() {
                        closed.insert(c);
                    }
                    current = Some(name.to_string());
                }
                let family = match families.iter().position(|f| f.name == name) {
                    Some(i) => &mut families[i],
                    None => {
                        families.push(Family {
                            name: name.to_string(),
                            help: None,
                            kind: Kind::Untyped,
                            samples: Vec::new(),
                        });
                        families.last_mut().expect("pushed")
                    }
                };
                if keyword == Some("HELP") {
                    if !helped.insert(name.to_string()) {
                        return Err(at(format!("second HELP for {name}")));
                    }
                    let raw = rest.unwrap_or("");
                    let mut help = String::new();
                    let mut chars = raw.chars();
                    while let Some(c) = chars.next() {
                        if c != '\\' {
                            help.push(c);
                            continue;
                        }
                        match chars.next() {
                            Some('\\') => help.push('\\'),
                            Some('n') => help.push('\n'),
                            other => return Err(at(format!("bad escape in HELP: {other:?}"))),
                        }
                    }
                    family.help = Some(help);
                } else {
                    if kinds.contains_key(name) {
                        return Err(at(format!("second TYPE for {name}")));
                    }
                    if !family.samples.is_empty() {
                        return Err(at(format!("TYPE for {name} after its samples")));
                    }
                    let kind = match rest.map(str::trim) {
                        Some("counter") => Kind::Counter,
                        Some("gauge") => Kind::Gauge,
                        Some("histogram") => Kind::Histogram,
                        Some("summary") => Kind::Summary,
                        Some("untyped") => Kind::Untyped,
                        other => return Err(at(format!("unknown type {other:?}"))),
                    };
                    family.kind = kind;
                    kinds.insert(name.to_string(), kind);
                }
                continue;
            }
            // A sample: name [{labels}] value [timestamp]
            let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
            let name = &line[..name_end];
            if !is_metric_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end..]).map_err(at)?
            } else {
                (Vec::new(), &line[name_end..])
            };
            let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
            let value = fields.next().ok_or_else(|| at("no value".into()))?;
            let value = parse_value(value).ok_or_else(|| at(format!("bad value {value:?}")))?;
            if let Some(ts) = fields.next() {
                ts.parse::<i64>()
                    .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
            }
            if fields.next().is_some() {
                return Err(at("text after the timestamp".into()));
            }
            let fam = family_of(name, &kinds).to_string();
            let kind = kinds.get(&fam).copied().unwrap_or(Kind::Untyped);
            if closed.contains(&fam) {
                return Err(at(format!("samples of {fam} are not one group")));
            }
            if current.as_deref() != Some(fam.as_str()) {
                if let Some(c) = current.take() {
                    closed.insert(c);
                }
                current = Some(fam.clone());
            }
            let is_bucket = kind == Kind::Histogram && name.ends_with("_bucket");
            if is_bucket != labels.iter().any(|(k, _)| k == "le") {
                return Err(at(
                    "`le` belongs on histogram buckets, and only there".into()
                ));
            }
            if kind == Kind::Counter && (value.is_nan() || value < 0.0) {
                return Err(at("a counter below zero".into()));
            }
            let mut key = labels.clone();
            key.sort();
            if !series.insert((name.to_string(), key)) {
                return Err(at("the same series twice".into()));
            }
            let sample = Sample {
                name: name.to_string(),
                labels,
                value,
            };
            match families.iter_mut().find(|f| f.name == fam) {
                Some(f) => f.samples.push(sample),
                None => families.push(Family {
                    name: fam,
                    help: None,
                    kind,
                    samples: vec![sample],
                }),
            }
        }
        let scrape = Scrape { families };
        for f in scrape.families.iter().filter(|f| f.kind == Kind::Histogram) {
            scrape.check_histogram(f)?;
        }
        Ok(scrape)
    }

    /// Buckets sorted by `le`, cumulative, ending in `+Inf` equal to `_count`, and a
    /// `_sum`, for each label set of the histogram.
    fn check_histogram(&self, f: &Family) -> Result<(), String> {
        let mut by_set: HashMap<Labels, Vec<(f64, f64)>> = HashMap::new();
        for s in f.samples.iter().filter(|s| s.name.ends_with("_bucket")) {
            let le = s.label("le").expect("checked above");
            let le = parse_value(le).ok_or_else(|| format!("{}: bad le {le:?}", f.name))?;
            let mut key: Vec<_> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            key.sort();
            by_set.entry(key).or_default().push((le, s.value));
        }
        for (key, buckets) in by_set {
            let labels: Vec<(&str, &str)> =
                key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            for w in buckets.windows(2) {
                if w[0].0.partial_cmp(&w[1].0) != Some(std::cmp::Ordering::Less) || w[0].1 > w[1].1
                {
                    return Err(format!(
                        "{} {key:?}: buckets not sorted and cumulative",
                        f.name
                    ));
                }
            }
            let last = buckets.last().expect("one at least");
            if last.0 != f64::INFINITY {
                return Err(format!("{} {key:?}: no +Inf bucket", f.name));
            }
            let count = self.value(&format!("{}_count", f.name), &labels);
            if count != Some(last.1) {
                return Err(format!(
                    "{} {key:?}: +Inf is {} but _count {count:?}",
                    f.name, last.1
                ));
            }
            if self.value(&format!("{}_sum", f.name), &labels).is_none() {
                return Err(format!("{} {key:?}: no _sum", f.name));
            }
        }
        Ok(())
    }

    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// Every sample named `name` (a family name, or `x_bucket`, `x_count`...).
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.families
            .iter()
            .flat_map(|f| f.samples.iter())
            .filter(move |s| s.name == name)
    }

    /// The value of `name` with exactly these labels (in any order).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(name)
            .find(|s| {
                s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// The sum of every sample named `name`, whatever its labels.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples(name).map(|s| s.value).sum()
    }
}

#[test]
fn the_parser_rejects_what_prometheus_would() {
    let good = "# HELP a_total A counter.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\\\\\\n\"} 3\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 2\n";
    let s = Scrape::parse(good).expect("valid");
    assert_eq!(
        s.value("a_total", &[("y", "q\"\\\n"), ("x", "1")]),
        Some(3.0)
    );
    assert_eq!(s.value("h_bucket", &[("le", "+Inf")]), Some(2.0));
    let bad = [
        ("no final newline", "a 1"),
        ("bad name", "1a 1\n"),
        ("bad value", "a one\n"),
        ("bad escape", "a{x=\"\\t\"} 1\n"),
        ("unquoted", "a{x=1} 1\n"),
        ("late type", "a 1\n# TYPE a gauge\n"),
        ("two types", "# TYPE a gauge\n# TYPE a gauge\na 1\n"),
        ("split family", "a 1\nb 1\na{x=\"2\"} 1\n"),
        ("duplicate", "a{x=\"1\"} 1\na{x=\"1\"} 2\n"),
        ("negative counter", "# TYPE a counter\na -1\n"),
        (
            "not cumulative",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        ),
        (
            "no +Inf",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n",
        ),
        (
            "count differs",
            "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n",
        ),
    ];
    for (why, text) in bad {
        assert!(Scrape::parse(text).is_err(), "{why}: accepted {text:?}");
    }
}
