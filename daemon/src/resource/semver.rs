//! Semantic versions and constraints with the semantics of Masterminds/semver v3, the library
//! Kargo uses for every `semverConstraint`, so a constraint selects here what it selects there.
//!
//! The `semver` crate follows Cargo's rules (`1.2` means `^1.2`, no `||`, no hyphen ranges), so
//! only its [`semver::Version`] is reused; the constraint grammar and matching are written here:
//!
//! * alternatives with `||`; within one, constraints joined by spaces or commas all must hold;
//! * hyphen ranges `1.2 - 1.4.5` mean `>= 1.2, <= 1.4.5`;
//! * operators `=`, `!=`, `>`, `<`, `>=`/`=>`, `<=`/`=<`, `~`/`~>`, `^`, or none (equality);
//! * partial versions and wildcards (`1`, `1.2`, `1.2.x`, `*`) widen the comparison;
//! * a pre-release version only matches an alternative that itself names a pre-release.

use std::cmp::Ordering;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use semver::{BuildMetadata, Prerelease, Version};

/// A version pattern inside a constraint: `v?` + up to three parts, each a number or wildcard.
const CV: &str = r"v?([0-9xX*]+)(\.[0-9xX*]+)?(\.[0-9xX*]+)?(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?";
const OPS: &str = r"=|!=|>|<|>=|=>|<=|=<|~|~>|\^";

static ONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"^\s*({OPS})?\s*({CV})\s*$")).expect("valid regex"));
static FIND: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"({OPS})?\s*({CV})")).expect("valid regex"));
static VALID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(
        r"^(\s*({OPS})?\s*({CV})\s*)((?:\s+|,\s*)({OPS})?\s*({CV})\s*)*$"
    ))
    .expect("valid regex")
});
static RANGE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!(r"\s*({CV})\s+-\s+({CV})\s*")).expect("valid regex"));

/// Why a constraint string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "improper semver constraint {0:?}: expected e.g. ^1.2, ~1.2.3, 1.2.x, >=1.2 <2, 1.2 - 1.4 or a || b"
)]
pub struct ConstraintError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Tilde,
    Caret,
}

/// One comparison, e.g. `>=1.2` (with `1.2` "patch-dirty": its patch is a wildcard).
#[derive(Debug, Clone)]
struct Comparison {
    op: Op,
    version: Version,
    /// No major given (`*`, `x`): everything below is a wildcard.
    dirty: bool,
    minor_dirty: bool,
    patch_dirty: bool,
}

/// A parsed Masterminds constraint: alternatives (`||`) of conjunctions.
#[derive(Debug, Clone)]
pub struct Constraint {
    source: String,
    alternatives: Vec<(Vec<Comparison>, bool)>,
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn is_x(part: &str) -> bool {
    matches!(part, "x" | "X" | "*")
}

impl Constraint {
    /// Parses a constraint; the empty string means "any release version".
    pub fn parse(source: &str) -> Result<Self, ConstraintError> {
        let rewritten = RANGE.replace_all(source, |c: &regex::Captures<'_>| {
            format!(" >= {}, <= {} ", &c[1], &c[11])
        });
        let mut alternatives = Vec::new();
        for alternative in rewritten.split("||") {
            if alternative.trim().is_empty() && !source.trim().is_empty() {
                return Err(ConstraintError(source.to_string()));
            }
            if alternative.trim().is_empty() {
                alternatives.push((vec![Comparison::any()], false));
                continue;
            }
            if !VALID.is_match(alternative) {
                return Err(ConstraintError(source.to_string()));
            }
            let mut comparisons = Vec::new();
            for found in FIND.find_iter(alternative) {
                comparisons.push(
                    Comparison::parse(found.as_str())
                        .ok_or_else(|| ConstraintError(source.to_string()))?,
                );
            }
            let names_prerelease = comparisons.iter().any(|c| !c.version.pre.is_empty());
            alternatives.push((comparisons, names_prerelease));
        }
        Ok(Constraint {
            source: source.to_string(),
            alternatives,
        })
    }

    /// Whether `version` satisfies the constraint.
    pub fn matches(&self, version: &Version) -> bool {
        self.alternatives
            .iter()
            .any(|(comparisons, names_prerelease)| {
                (version.pre.is_empty() || *names_prerelease)
                    && comparisons.iter().all(|c| c.matches(version))
            })
    }
}

impl Comparison {
    fn any() -> Self {
        Comparison {
            op: Op::Ge,
            version: Version::new(0, 0, 0),
            dirty: true,
            minor_dirty: false,
            patch_dirty: false,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let m = ONE.captures(text)?;
        let op = match m.get(1).map_or("", |o| o.as_str()) {
            "" | "=" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" | "=>" => Op::Ge,
            "<=" | "=<" => Op::Le,
            "~" | "~>" => Op::Tilde,
            "^" => Op::Caret,
            _ => return None,
        };
        let major = &m[3];
        let minor = m.get(4).map_or("", |p| &p.as_str()[1..]);
        let patch = m.get(5).map_or("", |p| &p.as_str()[1..]);
        let pre = m.get(7).map_or("", |p| p.as_str());
        let build = m.get(10).map_or("", |p| p.as_str());
        let (mut dirty, mut minor_dirty, mut patch_dirty) = (false, false, false);
        let (ma, mi, pa) = if is_x(major) {
            dirty = true;
            (0, 0, 0)
        } else if is_x(minor) || minor.is_empty() {
            dirty = true;
            minor_dirty = true;
            (number(major)?, 0, 0)
        } else if is_x(patch) || patch.is_empty() {
            dirty = true;
            patch_dirty = true;
            (number(major)?, number(minor)?, 0)
        } else {
            (number(major)?, number(minor)?, number(patch)?)
        };
        let mut version = Version::new(ma, mi, pa);
        version.pre = Prerelease::new(pre).ok()?;
        version.build = BuildMetadata::new(build).ok()?;
        Some(Comparison {
            op,
            version,
            dirty,
            minor_dirty,
            patch_dirty,
        })
    }

    fn matches(&self, v: &Version) -> bool {
        let c = &self.version;
        let cmp = v.cmp_precedence(c);
        match self.op {
            Op::Ne => {
                if self.dirty {
                    if c.major != v.major {
                        return true;
                    }
                    if self.minor_dirty {
                        return false;
                    }
                    if c.minor != v.minor {
                        return true;
                    }
                    if self.patch_dirty {
                        return (!v.pre.is_empty() || !c.pre.is_empty())
                            && v.pre.cmp(&c.pre) != Ordering::Equal;
                    }
                }
                cmp != Ordering::Equal
            }
            Op::Gt => {
                if !self.dirty {
                    return cmp == Ordering::Greater;
                }
                match v.major.cmp(&c.major) {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    Ordering::Equal if self.minor_dirty => false,
                    Ordering::Equal if self.patch_dirty => v.minor > c.minor,
                    Ordering::Equal => cmp == Ordering::Greater,
                }
            }
            Op::Lt => cmp == Ordering::Less,
            Op::Ge => cmp != Ordering::Less,
            Op::Le => {
                if !self.dirty {
                    return cmp != Ordering::Greater;
                }
                !(v.major > c.major
                    || (v.major == c.major && v.minor > c.minor && !self.minor_dirty))
            }
            Op::Tilde => self.tilde(v, cmp),
            Op::Eq => {
                if self.dirty {
                    self.tilde(v, cmp)
                } else {
                    cmp == Ordering::Equal
                }
            }
            Op::Caret => {
                if cmp == Ordering::Less {
                    return false;
                }
                if c.major > 0 || self.minor_dirty {
                    return v.major == c.major;
                }
                if v.major > 0 {
                    return false;
                }
                if c.minor > 0 || self.patch_dirty {
                    return v.minor == c.minor;
                }
                if v.minor > 0 {
                    return false;
                }
                v.patch == c.patch
            }
        }
    }

    fn tilde(&self, v: &Version, cmp: Ordering) -> bool {
        let c = &self.version;
        if cmp == Ordering::Less {
            return false;
        }
        if c.major == 0 && c.minor == 0 && c.patch == 0 && !self.minor_dirty && !self.patch_dirty {
            return true;
        }
        v.major == c.major && (v.minor == c.minor || self.minor_dirty)
    }
}

fn number(part: &str) -> Option<u64> {
    part.parse().ok()
}

/// Parses a version as Masterminds' `NewVersion` does: an optional `v`, and missing minor or
/// patch parts read as zero (`v1.2` is 1.2.0). With `strict`, all three parts are required.
pub fn parse_version(text: &str, strict: bool) -> Option<Version> {
    let rest = text.strip_prefix('v').unwrap_or(text);
    let core_end = rest.find(['-', '+']).unwrap_or(rest.len());
    let (core, suffix) = rest.split_at(core_end);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 3 || (strict && parts.len() != 3) {
        return None;
    }
    let mut full = parts.join(".");
    for _ in parts.len()..3 {
        full.push_str(".0");
    }
    full.push_str(suffix);
    Version::parse(&full).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(constraint: &str, version: &str) -> bool {
        Constraint::parse(constraint)
            .unwrap_or_else(|e| panic!("{e}"))
            .matches(&parse_version(version, false).expect("valid version"))
    }

    #[test]
    fn caret_follows_masterminds_for_zero_majors() {
        assert!(ok("^1.2.3", "1.9.0"));
        assert!(!ok("^1.2.3", "2.0.0"));
        assert!(!ok("^1.2.3", "1.2.2"));
        assert!(ok("^0.2.3", "0.2.9"));
        assert!(!ok("^0.2.3", "0.3.0"));
        assert!(ok("^0.0.3", "0.0.3"));
        assert!(!ok("^0.0.3", "0.0.4"));
        assert!(ok("^1.2", "1.5.0"));
        assert!(ok("^0", "0.9.0"));
        assert!(!ok("^0", "1.0.0"));
    }

    #[test]
    fn tilde_and_wildcards_widen_the_last_given_part() {
        assert!(ok("~1.2.3", "1.2.9"));
        assert!(!ok("~1.2.3", "1.3.0"));
        assert!(ok("~1.2", "1.2.0"));
        assert!(ok("~1", "1.9.9"));
        assert!(!ok("~1", "2.0.0"));
        assert!(ok("1.2.x", "1.2.7"));
        assert!(!ok("1.2.x", "1.3.0"));
        assert!(ok("*", "5.0.0"));
        assert!(
            ok("1.2", "1.2.5"),
            "a partial version is a wildcard in Masterminds v3"
        );
        assert!(ok("=1.2.3", "1.2.3"));
        assert!(!ok("=1.2.3", "1.2.4"));
    }

    #[test]
    fn comparisons_ranges_and_alternatives() {
        assert!(ok(">=1.2 <2", "1.9.9"));
        assert!(!ok(">=1.2 <2", "2.0.0"));
        assert!(ok(">=1.2, <2", "1.2.0"));
        assert!(ok("1.2 - 1.4", "1.4.0"));
        assert!(!ok("1.2 - 1.4.5", "1.4.6"));
        assert!(!ok("1.2 - 1.4.5", "1.1.9"));
        assert!(ok("<1.0 || >=3", "3.1.0"));
        assert!(ok("<1.0 || >=3", "0.5.0"));
        assert!(!ok("<1.0 || >=3", "2.0.0"));
        assert!(ok("!=1.2.3", "1.2.4"));
        assert!(!ok("!=1.2.3", "1.2.3"));
        assert!(ok(">1.2", "1.3.0"));
        assert!(!ok(">1.2", "1.2.5"), ">1.2 means above every 1.2.x");
        assert!(ok("<=1.2", "1.2.9"));
        assert!(!ok("<=1.2", "1.3.0"));
    }

    #[test]
    fn prereleases_match_only_when_the_constraint_names_one() {
        assert!(!ok("^1.2.0", "1.3.0-rc.1"));
        assert!(ok(">=1.3.0-rc.0", "1.3.0-rc.1"));
        assert!(!ok(">=1.3.0-rc.0", "1.2.0-rc.1"));
    }

    #[test]
    fn refuses_what_is_not_a_constraint() {
        for bad in ["abc", "^^1", ">=1.2 <", "1.2 ||", "==1"] {
            assert!(Constraint::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Constraint::parse("").is_ok());
    }

    #[test]
    fn versions_parse_loosely_unless_strict() {
        assert_eq!(parse_version("v1.2", false), Some(Version::new(1, 2, 0)));
        assert_eq!(parse_version("1.2", true), None);
        assert_eq!(
            parse_version("1.2.3-rc.1", true).map(|v| v.pre.to_string()),
            Some("rc.1".into())
        );
        assert_eq!(parse_version("latest", false), None);
        assert_eq!(parse_version("01.2.3", false), None);
    }
}
