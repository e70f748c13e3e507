//! `semverParse(v)`'s values: Kargo returns Masterminds' `*semver.Version`, whose methods
//! expressions call (`semverParse(v).IncMinor().String()`).
//!
//! A version is an expr map that carries its parts as fields too (`.Major` reads like
//! `.Major()`), marked by a [`MARK`] key; written out as JSON it is its version string, as a
//! `*semver.Version` marshals.

use expr::Value as X;
use indexmap::IndexMap;
use semver::{BuildMetadata, Prerelease, Version};

use crate::resource::semver::parse_version;

/// The key that marks a map as a version (its value is the version's text).
pub const MARK: &str = "$semver";

/// A version as expressions see it; `original` is the text it was parsed from.
pub fn value(v: &Version, original: &str) -> X {
    let mut m = IndexMap::new();
    m.insert(MARK.into(), X::String(text(v)));
    m.insert("Major".into(), X::Integer(v.major as i64));
    m.insert("Minor".into(), X::Integer(v.minor as i64));
    m.insert("Patch".into(), X::Integer(v.patch as i64));
    m.insert("Prerelease".into(), X::String(v.pre.to_string()));
    m.insert("Metadata".into(), X::String(v.build.to_string()));
    m.insert("Original".into(), X::String(original.into()));
    m.insert("String".into(), X::String(text(v)));
    X::Map(m)
}

/// Masterminds' `String()`: `MAJOR.MINOR.PATCH[-PRE][+META]`, without a `v`.
fn text(v: &Version) -> String {
    v.to_string()
}

/// Parses as Masterminds' `NewVersion` (`v1.2` is 1.2.0).
pub fn parse(text: &str) -> Result<X, String> {
    parse_version(text, false)
        .map(|v| value(&v, text))
        .ok_or_else(|| format!("semverParse: {text:?} is not a semantic version"))
}

/// The version a value is, if it is one (a version value, or text that parses as one).
pub fn of(v: &X) -> Option<(Version, String)> {
    match v {
        X::Map(m) => {
            let text = m.get(MARK)?.as_string()?;
            let original = m
                .get("Original")
                .and_then(X::as_string)
                .unwrap_or(text)
                .to_string();
            Some((parse_version(text, false)?, original))
        }
        X::String(s) => parse_version(s, false).map(|v| (v, s.clone())),
        _ => None,
    }
}

/// Masterminds' `Compare`: by version and pre-release; metadata does not count.
fn compare(a: &Version, b: &Version) -> std::cmp::Ordering {
    let strip = |v: &Version| Version {
        build: BuildMetadata::EMPTY,
        ..v.clone()
    };
    strip(a).cmp(&strip(b))
}

/// Calls method `name` of version `v` with `args`.
pub fn call(v: &Version, original: &str, name: &str, args: &[X]) -> Result<X, String> {
    let other = || -> Result<Version, String> {
        args.first()
            .and_then(of)
            .map(|(v, _)| v)
            .ok_or_else(|| format!("{name}() takes a version (semverParse(...))"))
    };
    let part = || -> Result<String, String> {
        args.first()
            .and_then(X::as_string)
            .map(str::to_string)
            .ok_or_else(|| format!("{name}() takes a string"))
    };
    let fresh = |v: Version| {
        let t = text(&v);
        value(&v, &t)
    };
    Ok(match name {
        "Major" => X::Integer(v.major as i64),
        "Minor" => X::Integer(v.minor as i64),
        "Patch" => X::Integer(v.patch as i64),
        "Prerelease" => X::String(v.pre.to_string()),
        "Metadata" => X::String(v.build.to_string()),
        "Original" => X::String(original.into()),
        "String" => X::String(text(v)),
        "IncMajor" => fresh(Version::new(v.major + 1, 0, 0)),
        "IncMinor" => fresh(Version::new(v.major, v.minor + 1, 0)),
        // A pre-release's patch release is the same numbers without the pre-release.
        "IncPatch" if !v.pre.is_empty() => fresh(Version::new(v.major, v.minor, v.patch)),
        "IncPatch" => fresh(Version::new(v.major, v.minor, v.patch + 1)),
        "SetPrerelease" => {
            let pre = part()?;
            let pre = Prerelease::new(&pre)
                .map_err(|e| format!("SetPrerelease({pre:?}): not a pre-release: {e}"))?;
            fresh(Version { pre, ..v.clone() })
        }
        "SetMetadata" => {
            let build = part()?;
            let build = BuildMetadata::new(&build)
                .map_err(|e| format!("SetMetadata({build:?}): not build metadata: {e}"))?;
            fresh(Version { build, ..v.clone() })
        }
        "LessThan" => X::Bool(compare(v, &other()?).is_lt()),
        "GreaterThan" => X::Bool(compare(v, &other()?).is_gt()),
        "Equal" => X::Bool(compare(v, &other()?).is_eq()),
        "Compare" => X::Integer(compare(v, &other()?) as i64),
        _ => return Err(format!("a version has no method {name}()")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> (Version, String) {
        of(&parse(text).unwrap()).unwrap()
    }

    fn string(v: X) -> String {
        let (v, _) = of(&v).unwrap();
        v.to_string()
    }

    #[test]
    fn increments_follow_masterminds() {
        let (v, o) = version("v1.2.3-rc.1+build.5");
        assert_eq!(string(call(&v, &o, "IncMajor", &[]).unwrap()), "2.0.0");
        assert_eq!(string(call(&v, &o, "IncMinor", &[]).unwrap()), "1.3.0");
        assert_eq!(string(call(&v, &o, "IncPatch", &[]).unwrap()), "1.2.3");
        let (v, o) = version("1.2");
        assert_eq!(string(call(&v, &o, "IncPatch", &[]).unwrap()), "1.2.1");
        assert_eq!(
            call(&v, &o, "Original", &[]).unwrap(),
            X::String("1.2".into())
        );
        assert_eq!(
            call(&v, &o, "String", &[]).unwrap(),
            X::String("1.2.0".into())
        );
    }

    #[test]
    fn comparisons_ignore_metadata_and_take_versions_or_text() {
        let (v, o) = version("1.2.3+a");
        let same = parse("1.2.3+b").unwrap();
        assert_eq!(call(&v, &o, "Equal", &[same]).unwrap(), X::Bool(true));
        let newer = X::String("1.10.0".into());
        assert_eq!(
            call(&v, &o, "LessThan", std::slice::from_ref(&newer)).unwrap(),
            X::Bool(true)
        );
        assert_eq!(call(&v, &o, "Compare", &[newer]).unwrap(), X::Integer(-1));
        assert!(call(&v, &o, "LessThan", &[X::Integer(3)]).is_err());
        assert!(call(&v, &o, "Explode", &[]).is_err());
    }

    #[test]
    fn setters_check_what_they_set() {
        let (v, o) = version("1.2.3");
        assert_eq!(
            string(call(&v, &o, "SetPrerelease", &[X::String("beta.1".into())]).unwrap()),
            "1.2.3-beta.1"
        );
        assert!(call(&v, &o, "SetPrerelease", &[X::String("bad pre".into())]).is_err());
    }
}
