//! Semantic versions and constraints as `Masterminds/semver` v3 reads them (Helm's
//! `semverCompare` and dependency ranges): `v` prefixes, partial versions (`1.19`), operators
//! `= != > < >= <= ~ ~> ^`, wildcards (`1.2.x`, `*`), hyphen ranges (`1.2 - 1.4`), `,` (and) and
//! `||` (or); a prerelease version matches only a constraint that names a prerelease.

use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Vec<String>,
}

impl Version {
    /// `1.2.3`, `v1.2`, `1.19-0`, `1.2.3-rc.1+build`.
    pub fn parse(text: &str) -> Option<Version> {
        let (v, _) = Self::parse_partial(text)?;
        Some(v)
    }

    /// A version and how many of its three parts were written (wildcards count as unwritten).
    fn parse_partial(text: &str) -> Option<(Version, usize)> {
        let text = text.trim();
        let text = text.strip_prefix('v').unwrap_or(text);
        let text = text.split('+').next()?;
        let (core, pre) = match text.split_once('-') {
            Some((c, p)) => (c, p.split('.').map(str::to_string).collect()),
            None => (text, Vec::new()),
        };
        let mut parts = [0u64; 3];
        let mut written = 0;
        for (i, p) in core.split('.').enumerate() {
            if i > 2 {
                return None;
            }
            if matches!(p, "x" | "X" | "*") {
                break;
            }
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts[i] = p.parse().ok()?;
            written = i + 1;
        }
        Some((
            Version {
                major: parts[0],
                minor: parts[1],
                patch: parts[2],
                pre,
            },
            written,
        ))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

/// One comparison: the version must be within [low, high).
#[derive(Debug, Clone)]
struct Range {
    low: Option<(Version, bool)>,
    high: Option<(Version, bool)>,
    not: Option<Version>,
    /// Whether the constraint names a prerelease (only then may a prerelease match).
    allows_pre: bool,
}

impl Range {
    fn matches(&self, v: &Version) -> bool {
        if !v.pre.is_empty() && !self.allows_pre {
            return false;
        }
        if let Some(n) = &self.not {
            return v != n;
        }
        if let Some((low, inclusive)) = &self.low {
            match v.cmp(low) {
                Ordering::Less => return false,
                Ordering::Equal if !inclusive => return false,
                _ => {}
            }
        }
        if let Some((high, inclusive)) = &self.high {
            match v.cmp(high) {
                Ordering::Greater => return false,
                Ordering::Equal if !inclusive => return false,
                _ => {}
            }
        }
        true
    }
}

/// A constraint: ranges that must all hold, in groups of which one must.
#[derive(Debug, Clone)]
pub struct Constraint(Vec<Vec<Range>>);

fn bump(v: &Version, written: usize) -> Version {
    let mut n = v.clone();
    n.pre.clear();
    match written {
        0 => n.major = u64::MAX,
        // Saturating: a version of 18446744073709551615 has no next one (fuzzing found the
        // overflow).
        1 => {
            n.major = n.major.saturating_add(1);
            n.minor = 0;
            n.patch = 0;
        }
        2 => {
            n.minor = n.minor.saturating_add(1);
            n.patch = 0;
        }
        _ => n.patch = n.patch.saturating_add(1),
    }
    n
}

impl Constraint {
    pub fn parse(text: &str) -> Option<Constraint> {
        let mut groups = Vec::new();
        for group in text.split("||") {
            let mut ranges = Vec::new();
            // Hyphen ranges first: `1.2 - 1.4.5`.
            let normalized = group.replace(',', " ");
            let tokens: Vec<&str> = normalized.split_whitespace().collect();
            let mut i = 0;
            while i < tokens.len() {
                if i + 2 < tokens.len() && tokens[i + 1] == "-" {
                    let (low, _) = Version::parse_partial(tokens[i])?;
                    let (high, written) = Version::parse_partial(tokens[i + 2])?;
                    let allows_pre = !low.pre.is_empty() || !high.pre.is_empty();
                    let high = if written < 3 {
                        (bump(&high, written), false)
                    } else {
                        (high, true)
                    };
                    ranges.push(Range {
                        low: Some((low, true)),
                        high: Some(high),
                        not: None,
                        allows_pre,
                    });
                    i += 3;
                    continue;
                }
                // An operator may stand apart from its version (`>= 1.2`).
                let mut token = tokens[i].to_string();
                if token.chars().all(|c| "=!<>~^".contains(c)) && i + 1 < tokens.len() {
                    token.push_str(tokens[i + 1]);
                    i += 1;
                }
                ranges.push(Self::one(&token)?);
                i += 1;
            }
            if ranges.is_empty() {
                return None;
            }
            groups.push(ranges);
        }
        Some(Constraint(groups))
    }

    fn one(token: &str) -> Option<Range> {
        let op_len = token
            .find(|c: char| !"=!<>~^".contains(c))
            .unwrap_or(token.len());
        let (op, version) = token.split_at(op_len);
        if matches!(version.trim(), "*" | "x" | "X") || version.is_empty() && op.is_empty() {
            return Some(Range {
                low: None,
                high: None,
                not: None,
                allows_pre: false,
            });
        }
        let (v, written) = Version::parse_partial(version)?;
        let allows_pre = !v.pre.is_empty();
        let range = |low: Option<(Version, bool)>, high: Option<(Version, bool)>| Range {
            low,
            high,
            not: None,
            allows_pre,
        };
        Some(match op {
            "" | "=" => {
                if written < 3 {
                    range(Some((v.clone(), true)), Some((bump(&v, written), false)))
                } else {
                    range(Some((v.clone(), true)), Some((v, true)))
                }
            }
            "!=" => Range {
                low: None,
                high: None,
                not: Some(v),
                allows_pre,
            },
            ">" => {
                if written < 3 {
                    range(Some((bump(&v, written), true)), None)
                } else {
                    range(Some((v, false)), None)
                }
            }
            ">=" | "=>" => range(Some((v, true)), None),
            "<" => range(None, Some((v, false))),
            "<=" | "=<" => {
                if written < 3 {
                    range(None, Some((bump(&v, written), false)))
                } else {
                    range(None, Some((v, true)))
                }
            }
            "~" | "~>" => {
                let high = bump(&v, if written <= 1 { 1 } else { 2 });
                range(Some((v, true)), Some((high, false)))
            }
            "^" => {
                let high = if v.major > 0 || written <= 1 {
                    bump(&v, 1)
                } else if v.minor > 0 || written == 2 {
                    bump(&v, 2)
                } else {
                    bump(&v, 3)
                };
                range(Some((v, true)), Some((high, false)))
            }
            _ => return None,
        })
    }

    pub fn matches(&self, v: &Version) -> bool {
        self.0
            .iter()
            .any(|group| group.iter().all(|r| r.matches(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(c: &str, v: &str) -> bool {
        Constraint::parse(c)
            .unwrap_or_else(|| panic!("{c}"))
            .matches(&Version::parse(v).unwrap_or_else(|| panic!("{v}")))
    }

    /// Found by fuzzing (fuzz/ target `constraints`): the next version after the largest
    /// number overflowed.
    #[test]
    fn the_largest_versions_have_no_overflowing_next_one() {
        let max = "18446744073709551615";
        for constraint in [
            format!("~{max}"),
            format!("^{max}.0.0"),
            format!("{max}.x"),
            format!("!=0-{max}"),
            format!("1.{max}.x"),
            format!("~1.2.{max}"),
        ] {
            if let Some(c) = Constraint::parse(&constraint) {
                let _ = c.matches(&Version::parse("1.2.3").expect("a version"));
            }
        }
    }

    #[test]
    fn constraints_as_masterminds_reads_them() {
        assert!(check(">=1.19-0", "v1.20.0"));
        assert!(!check(">=1.21-0", "v1.20.0"));
        assert!(check("^1.2.3", "1.9.0") && !check("^1.2.3", "2.0.0"));
        assert!(check("^0.2.3", "0.2.9") && !check("^0.2.3", "0.3.0"));
        assert!(check("~1.2.3", "1.2.9") && !check("~1.2.3", "1.3.0"));
        assert!(check("1.2.x", "1.2.7") && !check("1.2.x", "1.3.0"));
        assert!(check(">= 1.2, < 1.4", "1.3.1") && !check(">= 1.2, < 1.4", "1.4.0"));
        assert!(check("<1.0 || >=2.0", "2.1.0") && !check("<1.0 || >=2.0", "1.5.0"));
        assert!(check("1.2 - 1.4.5", "1.4.5") && !check("1.2 - 1.4.5", "1.4.6"));
        assert!(check("*", "3.0.0"));
        assert!(
            !check(">=1.0.0", "1.5.0-rc.1"),
            "a prerelease needs a prerelease constraint"
        );
        assert!(check(">=1.0.0-0", "1.5.0-rc.1"));
        assert!(check("!=1.2.3", "1.2.4") && !check("!=1.2.3", "1.2.3"));
        assert!(Constraint::parse(">=abc").is_none());
    }
}
