//! A chart's dependencies, fetched into its `charts/` as Helm's dependency manager does
//! (`helm dependency update` and `helm dependency build`), through the host's `helm` interface
//! (the repositories' credentials stay on the host).
//!
//! - **update** resolves each dependency of `Chart.yaml` to the greatest version its constraint
//!   allows (a classic repository's index, an OCI repository's tags; an exact OCI version is
//!   taken as written), writes every archive to `charts/NAME-VERSION.tgz`, removes the archives
//!   of charts no longer depended on, and writes `Chart.lock` when what it locks changed;
//! - **build** fetches exactly what `Chart.lock` locks, after checking that the lock still
//!   belongs to `Chart.yaml` (Helm's digest), and updates when there is no lock.
//!
//! `file://` dependencies are packaged from their directory; dependencies with no repository
//! must already be in `charts/`. Repository names from Helm's own configuration (`@stable`,
//! `alias:stable`) mean nothing here and are refused with what to write instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chart::semver::{Constraint, Version};
use gotmpl::Value;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

/// One entry of `Chart.yaml`'s `dependencies` (or `Chart.lock`'s), with Helm's fields.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Dependency {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub version: String,
    #[serde(default, deserialize_with = "nullable")]
    pub repository: String,
    #[serde(default, deserialize_with = "nullable")]
    pub condition: String,
    #[serde(default, deserialize_with = "nullable")]
    pub tags: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub import_values: Vec<serde_json::Value>,
    #[serde(default, deserialize_with = "nullable")]
    pub alias: String,
}

fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A string as Go's `encoding/json` writes it (`<`, `>` and `&` escaped).
fn go_json(text: &str) -> String {
    chart::funcs::to_json(&Value::from(text), true)
}

impl Dependency {
    /// The dependency as Go's `encoding/json` marshals Helm's `chart.Dependency`: its fields in
    /// declaration order, empty ones left out (but `repository`).
    fn go_json(&self) -> String {
        let mut fields = vec![format!("\"name\":{}", go_json(&self.name))];
        if !self.version.is_empty() {
            fields.push(format!("\"version\":{}", go_json(&self.version)));
        }
        fields.push(format!("\"repository\":{}", go_json(&self.repository)));
        if !self.condition.is_empty() {
            fields.push(format!("\"condition\":{}", go_json(&self.condition)));
        }
        if !self.tags.is_empty() {
            let tags: Vec<String> = self.tags.iter().map(|t| go_json(t)).collect();
            fields.push(format!("\"tags\":[{}]", tags.join(",")));
        }
        if self.enabled {
            fields.push("\"enabled\":true".into());
        }
        if !self.import_values.is_empty() {
            let values: Vec<String> = self
                .import_values
                .iter()
                .map(|v| chart::funcs::to_json(&chart::funcs::from_json(v), true))
                .collect();
            fields.push(format!("\"import-values\":[{}]", values.join(",")));
        }
        if !self.alias.is_empty() {
            fields.push(format!("\"alias\":{}", go_json(&self.alias)));
        }
        format!("{{{}}}", fields.join(","))
    }

    fn locked(&self, version: &str) -> Dependency {
        Dependency {
            name: self.name.clone(),
            repository: self.repository.clone(),
            version: version.to_string(),
            ..Dependency::default()
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:?} (repository {:?}, version {:?})",
            self.name, self.repository, self.version
        )
    }
}

/// Helm's digest of a lock: `sha256:` and the hex SHA-256 of `[requested, locked]` as JSON.
pub fn digest(requested: &[Dependency], locked: &[Dependency]) -> String {
    let list = |deps: &[Dependency]| {
        let items: Vec<String> = deps.iter().map(Dependency::go_json).collect();
        format!("[{}]", items.join(","))
    };
    let json = format!("[{},{}]", list(requested), list(locked));
    format!("sha256:{:x}", Sha256::digest(json.as_bytes()))
}

/// What changed in the lock, by dependency name: `old -> new`, the new version for an added
/// dependency, `""` for a removed one (Kargo's commit message).
pub type Changes = BTreeMap<String, String>;

/// The chart directory `dir`'s `Chart.yaml` dependencies.
fn requested(dir: &Path) -> Result<Vec<Dependency>, String> {
    let text = std::fs::read_to_string(dir.join("Chart.yaml"))
        .map_err(|e| format!("cannot read {}/Chart.yaml: {e}", shown(dir)))?;
    let doc = dray_sdk::yaml::edit::to_json(&text)
        .map_err(|e| format!("{}/Chart.yaml: {e}", shown(dir)))?;
    if doc["apiVersion"].as_str() == Some("v1") {
        return Err(format!(
            "{}/Chart.yaml is apiVersion v1 (Helm 2): move its requirements.yaml into Chart.yaml's dependencies and set apiVersion: v2",
            shown(dir)
        ));
    }
    dependencies(&doc, &format!("{}/Chart.yaml", shown(dir)))
}

fn dependencies(doc: &serde_json::Value, file: &str) -> Result<Vec<Dependency>, String> {
    let deps: Vec<Dependency> = match &doc["dependencies"] {
        serde_json::Value::Null => Vec::new(),
        list => serde_json::from_value(list.clone())
            .map_err(|e| format!("{file}: dependencies: {e}"))?,
    };
    if let Some(d) = deps.iter().find(|d| d.name.is_empty()) {
        return Err(format!("{file}: a dependency has no name ({d:?})"));
    }
    Ok(deps)
}

/// `Chart.lock`, if there is one.
fn lock(dir: &Path) -> Result<Option<(String, Vec<Dependency>)>, String> {
    let path = dir.join("Chart.lock");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}/Chart.lock: {e}", shown(dir))),
    };
    let file = format!("{}/Chart.lock", shown(dir));
    let doc = dray_sdk::yaml::edit::to_json(&text).map_err(|e| format!("{file}: {e}"))?;
    let digest = doc["digest"].as_str().unwrap_or_default().to_string();
    Ok(Some((digest, dependencies(&doc, &file)?)))
}

/// The guest path as the user wrote it (the work directory is `/`).
fn shown(dir: &Path) -> String {
    dir.display()
        .to_string()
        .trim_start_matches('/')
        .to_string()
}

fn constraint(dep: &Dependency) -> Result<Constraint, String> {
    Constraint::parse(&dep.version).ok_or_else(|| {
        format!(
            "dependency {:?} has an invalid version/constraint format: {:?}",
            dep.name, dep.version
        )
    })
}

/// The repository a dependency names, refused when it is a name from Helm's configuration.
fn repository(dep: &Dependency) -> Result<&str, String> {
    let repo = dep.repository.as_str();
    if repo.starts_with('@') || repo.starts_with("alias:") {
        return Err(format!(
            "dependency {:?} names repository {repo:?}, a name from Helm's repositories.yaml, which Dray does not read: write the repository's URL instead",
            dep.name
        ));
    }
    Ok(repo)
}

/// The local chart a `file://` repository points at, inside the work directory.
fn local_dir(chart_dir: &Path, repo: &str) -> Result<PathBuf, String> {
    let rel = repo.trim_start_matches("file://");
    if rel.starts_with('/') {
        return Err(format!("dependency path {rel:?} must be relative"));
    }
    let dir = chart_dir.join(rel);
    if !dir.is_dir() {
        return Err(format!("directory {} not found", shown(&dir)));
    }
    Ok(dir)
}

fn local_version(dir: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(dir.join("Chart.yaml"))
        .map_err(|e| format!("cannot read {}/Chart.yaml: {e}", shown(dir)))?;
    let doc = dray_sdk::yaml::edit::to_json(&text)
        .map_err(|e| format!("{}/Chart.yaml: {e}", shown(dir)))?;
    match &doc["version"] {
        serde_json::Value::String(v) => Ok(v.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("{}/Chart.yaml has no version", shown(dir))),
    }
}

/// Resolves every dependency to one version, as Helm's resolver does.
fn resolve(dir: &Path, requested: &[Dependency]) -> Result<Vec<Dependency>, String> {
    let mut locked = Vec::new();
    let mut missing = Vec::new();
    for dep in requested {
        let wanted = constraint(dep)?;
        let repo = repository(dep)?;
        if repo.is_empty() {
            if !dir.join("charts").join(&dep.name).exists() {
                return Err(format!(
                    "dependency {:?} has no repository and is not in {}/charts/{}",
                    dep.name,
                    shown(dir),
                    dep.name
                ));
            }
            locked.push(dep.locked(&dep.version));
            continue;
        }
        if repo.starts_with("file://") {
            let version = local_version(&local_dir(dir, repo)?)?;
            match Version::parse(&version) {
                Some(v) if wanted.matches(&v) => locked.push(dep.locked(&version)),
                Some(_) => missing.push(dep.describe()),
                None => {}
            }
            continue;
        }
        let exact = repo.starts_with("oci://") && Version::parse(&dep.version).is_some();
        let listed = if exact {
            vec![dep.version.clone()]
        } else {
            dray_sdk::helm::versions(repo, &dep.name)
                .map_err(|e| format!("dependency {:?}: {e}", dep.name))?
        };
        let mut versions: Vec<(Version, String)> = listed
            .into_iter()
            .filter_map(|text| Version::parse(&text).map(|v| (v, text)))
            .collect();
        // Greatest first, as Helm sorts an index and a registry's tags.
        versions.sort_by(|a, b| b.0.cmp(&a.0));
        match versions.into_iter().find(|(v, _)| wanted.matches(v)) {
            Some((_, text)) => locked.push(dep.locked(&text)),
            None => missing.push(dep.describe()),
        }
    }
    if !missing.is_empty() {
        return Err(format!(
            "can't get a valid version for {} subchart(s): {}. Make sure a matching chart version exists in the repo, or change the version constraint in Chart.yaml",
            missing.len(),
            missing.join(", ")
        ));
    }
    Ok(locked)
}

/// Fetches every locked dependency into `charts/`, then removes the archives of charts no
/// longer depended on. Nothing in `charts/` changes unless every fetch succeeded.
fn download(dir: &Path, locked: &mut [Dependency]) -> Result<(), String> {
    let charts = dir.join("charts");
    if charts.exists() && !charts.is_dir() {
        return Err(format!("{} is not a directory", shown(&charts)));
    }
    let staging = dir.join(".dray-tmpcharts");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("cannot create {}: {e}", shown(&staging)))?;
    let result = fetch_all(dir, &staging, locked).and_then(|fetched| {
        std::fs::create_dir_all(&charts)
            .map_err(|e| format!("cannot create {}: {e}", shown(&charts)))?;
        replace(&charts, &staging, &fetched, locked)
    });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn fetch_all(
    dir: &Path,
    staging: &Path,
    locked: &mut [Dependency],
) -> Result<BTreeSet<String>, String> {
    let mut fetched = BTreeSet::new();
    for dep in locked.iter_mut() {
        let repo = dep.repository.clone();
        if repo.is_empty() {
            let wanted = constraint(dep)?;
            let local = dir.join("charts").join(&dep.name);
            let version = local_version(&local)?;
            if !Version::parse(&version).is_some_and(|v| wanted.matches(&v)) {
                return Err(format!(
                    "dependency {} at version {version} does not satisfy the constraint {}",
                    dep.name, dep.version
                ));
            }
            continue;
        }
        if repo.starts_with("file://") {
            let (_, version, bytes) = chart::package(&local_dir(dir, &repo)?)
                .map_err(|e| format!("dependency {:?}: {e}", dep.name))?;
            let wanted = constraint(dep)?;
            if !Version::parse(&version).is_some_and(|v| wanted.matches(&v)) {
                return Err(format!(
                    "can't get a valid version for dependency {}",
                    dep.name
                ));
            }
            let file = format!("{}-{version}.tgz", dep.name);
            std::fs::write(staging.join(&file), bytes)
                .map_err(|e| format!("cannot write {file}: {e}"))?;
            dep.version = version;
            fetched.insert(file);
            continue;
        }
        let file = format!("{}-{}.tgz", dep.name, dep.version);
        if !fetched.insert(file.clone()) {
            // The same chart twice (under two aliases): fetched once.
            continue;
        }
        let path = staging.join(&file);
        let pulled =
            dray_sdk::helm::pull(&repo, &dep.name, &dep.version, &path.display().to_string())
                .map_err(|e| {
                    format!(
                        "could not download {} {} from {repo}: {e}",
                        dep.name, dep.version
                    )
                })?;
        dray_sdk::info!(
            "fetched {} {} from {repo} ({} bytes, {})",
            dep.name,
            dep.version,
            pulled.size,
            pulled.digest
        );
    }
    Ok(fetched)
}

/// Moves the fetched archives into `charts/` and removes the archives there that are charts no
/// dependency names any more (local dependencies' stay), as Helm's `safeMoveDeps`.
fn replace(
    charts: &Path,
    staging: &Path,
    fetched: &BTreeSet<String>,
    locked: &[Dependency],
) -> Result<(), String> {
    for file in fetched {
        let bytes =
            std::fs::read(staging.join(file)).map_err(|e| format!("cannot read {file}: {e}"))?;
        chart::Chart::from_archive(&bytes, file)
            .map_err(|e| format!("{file} is not a chart: {e}"))?;
    }
    let local: BTreeSet<&str> = locked
        .iter()
        .filter(|d| d.repository.is_empty())
        .map(|d| d.name.as_str())
        .collect();
    let existing =
        std::fs::read_dir(charts).map_err(|e| format!("cannot read {}: {e}", shown(charts)))?;
    for entry in existing.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() || fetched.contains(&name) {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(old) = chart::Chart::from_archive(&bytes, &name) else {
            continue;
        };
        if local.contains(old.name().as_str()) {
            continue;
        }
        std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", shown(&path)))?;
    }
    for file in fetched {
        std::fs::rename(staging.join(file), charts.join(file))
            .map_err(|e| format!("cannot move {file} into {}: {e}", shown(charts)))?;
    }
    Ok(())
}

/// `Chart.lock` as Helm writes it (keys in order, as `sigs.k8s.io/yaml` does).
fn write_lock(dir: &Path, digest: &str, locked: &[Dependency]) -> Result<(), String> {
    let deps: Vec<Value> = locked
        .iter()
        .map(|d| {
            let mut fields = vec![("name".to_string(), Value::from(d.name.as_str()))];
            fields.push(("repository".to_string(), Value::from(d.repository.as_str())));
            if !d.version.is_empty() {
                fields.push(("version".to_string(), Value::from(d.version.as_str())));
            }
            Value::map(fields)
        })
        .collect();
    let lock = Value::map([
        ("dependencies".to_string(), Value::list(deps)),
        ("digest".to_string(), Value::from(digest)),
        ("generated".to_string(), Value::from(now_rfc3339().as_str())),
    ]);
    let path = dir.join("Chart.lock");
    std::fs::write(&path, chart::yaml::dump(&lock))
        .map_err(|e| format!("cannot write {}: {e}", shown(&path)))
}

/// The wall clock as Go's `time.RFC3339Nano` in UTC.
fn now_rfc3339() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = since.subsec_nanos();
    if nanos > 0 {
        text.push_str(format!(".{nanos:09}").trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// `helm dependency update` for the chart in `dir`: the lock's changes.
pub fn update(dir: &Path) -> Result<Changes, String> {
    let requested = requested(dir)?;
    let before = lock(dir)?;
    if requested.is_empty() {
        return Ok(Changes::new());
    }
    let mut locked = resolve(dir, &requested)?;
    download(dir, &mut locked)?;
    let digest = digest(&requested, &locked);
    let old = before
        .as_ref()
        .map(|(_, deps)| deps.as_slice())
        .unwrap_or_default();
    let changes = compare(old, &locked);
    // As Helm, the lock is written only when it changed (Kargo: not even its timestamp).
    if before.as_ref().is_none_or(|(d, _)| *d != digest) {
        write_lock(dir, &digest, &locked)?;
    }
    Ok(changes)
}

/// `helm dependency build` for the chart in `dir`.
pub fn build(dir: &Path) -> Result<(), String> {
    let requested = requested(dir)?;
    if requested.is_empty() {
        return Ok(());
    }
    let Some((recorded, mut locked)) = lock(dir)? else {
        return update(dir).map(|_| ());
    };
    for dep in &locked {
        repository(dep)?;
    }
    if digest(&requested, &locked) != recorded {
        return Err(format!(
            "{}/Chart.lock is out of sync with the dependencies in Chart.yaml: update it (helm dependency update, or a helm-update-chart step)",
            shown(dir)
        ));
    }
    download(dir, &mut locked)
}

fn compare(before: &[Dependency], after: &[Dependency]) -> Changes {
    let mut old: BTreeMap<&str, &str> = before
        .iter()
        .map(|d| (d.name.as_str(), d.version.as_str()))
        .collect();
    let mut changes = Changes::new();
    for dep in after {
        match old.remove(dep.name.as_str()) {
            Some(v) if v == dep.version => {}
            Some(v) => {
                changes.insert(dep.name.clone(), format!("{v} -> {}", dep.version));
            }
            None => {
                changes.insert(dep.name.clone(), dep.version.clone());
            }
        }
    }
    for (name, _) in old {
        changes.insert(name.to_string(), String::new());
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(name: &str, version: &str, repository: &str) -> Dependency {
        Dependency {
            name: name.into(),
            version: version.into(),
            repository: repository.into(),
            ..Dependency::default()
        }
    }

    /// What the digest is taken of: the JSON Go's `encoding/json` writes for Helm's structs (the
    /// digests themselves are checked against the real helm in tests/tests/helm_step.rs).
    #[test]
    fn hashes_the_json_go_writes() {
        let requested = [
            Dependency {
                condition: "redis.enabled".into(),
                ..dep("redis", ">=0.1.0 <1.0.0", "http://127.0.0.1:8879")
            },
            Dependency {
                alias: "cache".into(),
                tags: vec!["backend".into()],
                ..dep("redis", "0.1.0", "http://127.0.0.1:8879")
            },
        ];
        let locked = [
            dep("redis", "0.2.0", "http://127.0.0.1:8879"),
            dep("redis", "0.1.0", "http://127.0.0.1:8879"),
        ];
        let json = format!(
            "[[{},{}],[{},{}]]",
            requested[0].go_json(),
            requested[1].go_json(),
            locked[0].go_json(),
            locked[1].go_json()
        );
        assert_eq!(
            json,
            r#"[[{"name":"redis","version":"\u003e=0.1.0 \u003c1.0.0","repository":"http://127.0.0.1:8879","condition":"redis.enabled"},{"name":"redis","version":"0.1.0","repository":"http://127.0.0.1:8879","tags":["backend"],"alias":"cache"}],[{"name":"redis","version":"0.2.0","repository":"http://127.0.0.1:8879"},{"name":"redis","version":"0.1.0","repository":"http://127.0.0.1:8879"}]]"#
        );
    }

    #[test]
    fn changes_as_kargo_reports_them() {
        let before = [
            dep("a", "1.0.0", ""),
            dep("b", "1.0.0", ""),
            dep("c", "1.0.0", ""),
        ];
        let after = [
            dep("a", "1.0.0", ""),
            dep("b", "1.1.0", ""),
            dep("d", "2.0.0", ""),
        ];
        let changes = compare(&before, &after);
        assert_eq!(
            changes.into_iter().collect::<Vec<_>>(),
            [
                ("b".to_string(), "1.0.0 -> 1.1.0".to_string()),
                ("c".to_string(), String::new()),
                ("d".to_string(), "2.0.0".to_string())
            ]
        );
    }

    #[test]
    fn the_clock_reads_as_go_writes_it() {
        let now = now_rfc3339();
        assert!(now.starts_with("20") && now.ends_with('Z'), "{now}");
        assert_eq!(&now[4..5], "-");
        assert_eq!(&now[10..11], "T");
    }
}
