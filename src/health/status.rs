//! Sets of HTTP status codes a probe accepts (`health.expect_status`, default `200-399`).

use std::fmt;

/// Inclusive ranges of status codes, e.g. `200-299,301,302`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusRanges(Vec<(u16, u16)>);

impl Default for StatusRanges {
    fn default() -> Self {
        StatusRanges(vec![(200, 399)])
    }
}

impl StatusRanges {
    /// Parses `NNN`, `NNN-NNN` and `Nxx` items separated by commas.
    pub fn parse(s: &str) -> Result<StatusRanges, String> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim) {
            let code = |c: &str| match c.parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n),
                _ => Err(format!("'{c}' is not a status code from 100 to 599")),
            };
            let range =
                if let Some(class) = item.strip_suffix("xx").or_else(|| item.strip_suffix("XX")) {
                    let c = code(&format!("{class}00"))?;
                    (c, c + 99)
                } else if let Some((a, b)) = item.split_once('-') {
                    let (a, b) = (code(a.trim())?, code(b.trim())?);
                    if a > b {
                        return Err(format!("'{item}' runs backwards"));
                    }
                    (a, b)
                } else {
                    let c = code(item)?;
                    (c, c)
                };
            out.push(range);
        }
        Ok(StatusRanges(out))
    }

    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|&(a, b)| a <= code && code <= b)
    }
}

impl fmt::Display for StatusRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?
            } else {
                write!(f, "{a}-{b}")?
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let s = StatusRanges::parse("2xx, 301-302,418").unwrap();
        assert!(s.contains(200) && s.contains(299) && s.contains(302) && s.contains(418));
        assert!(!s.contains(300) && !s.contains(500));
        assert_eq!(s.to_string(), "200-299,301-302,418");
        assert!(StatusRanges::default().contains(399));
        for bad in ["", "abc", "99", "600", "300-200", "7xx"] {
            assert!(StatusRanges::parse(bad).is_err(), "{bad}");
        }
    }
}
