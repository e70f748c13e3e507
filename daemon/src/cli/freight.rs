//! `dray freight create`: Freight by hand, from artifact references on the command line, for
//! a Warehouse of the project (the daemon names it by its fingerprint and gives it an alias).
//! `dray refresh warehouse`: discovery now, and (with `--wait`) what it found.

use crate::resource::status::WarehouseStatus;
use serde_json::{Value, json};

use super::client::{CliError, Client, exit};
use crate::admission::Source;

/// `repo[:tag][@digest]`; a registry port is not a tag.
fn image(text: &str) -> Result<Value, CliError> {
    let (rest, digest) = match text.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (text, None),
    };
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    if repo.is_empty() || (tag.is_none() && digest.is_none()) {
        return Err(CliError::new(
            exit::USAGE,
            format!("--image {text:?}: write REPOSITORY:TAG, REPOSITORY@DIGEST or both"),
        ));
    }
    let mut out = json!({"repoURL": repo});
    if let Some(tag) = tag {
        out["tag"] = json!(tag);
    }
    if let Some(digest) = digest {
        out["digest"] = json!(digest);
    }
    Ok(out)
}

/// `URL#COMMIT` (a URL may hold `:` and `@`, never `#` before its fragment).
fn commit(text: &str) -> Result<Value, CliError> {
    match text.rsplit_once('#') {
        Some((url, id)) if !url.is_empty() && !id.is_empty() => {
            Ok(json!({"repoURL": url, "id": id}))
        }
        _ => Err(CliError::new(
            exit::USAGE,
            format!("--commit {text:?}: write REPOSITORY_URL#COMMIT_ID"),
        )),
    }
}

/// `REPO_URL/NAME:VERSION` for a chart repository, `oci://HOST/PATH/NAME:VERSION` for OCI.
fn chart(text: &str) -> Result<Value, CliError> {
    let bad = || {
        CliError::new(
            exit::USAGE,
            format!(
                "--chart {text:?}: write https://REPO/NAME:VERSION or oci://HOST/PATH/NAME:VERSION"
            ),
        )
    };
    let (path, version) = text.rsplit_once(':').ok_or_else(bad)?;
    if version.contains('/') || version.is_empty() {
        return Err(bad());
    }
    if path.starts_with("oci://") {
        return Ok(json!({"repoURL": path, "version": version}));
    }
    let (repo, name) = path.rsplit_once('/').ok_or_else(bad)?;
    Ok(json!({"repoURL": repo, "name": name, "version": version}))
}

pub(super) struct Request<'a> {
    pub project: &'a str,
    pub warehouse: &'a str,
    pub images: &'a [String],
    pub commits: &'a [String],
    pub charts: &'a [String],
    pub alias: Option<&'a str>,
    /// Take the newest discovered candidate of every subscription (for a Manual Warehouse).
    pub newest: bool,
}

/// The newest discovered candidate of every subscription of the Warehouse's status.
fn newest(warehouse: &Value) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let found = &warehouse["status"]["discoveredArtifacts"];
    let list = |key: &str| found[key].as_array().cloned().unwrap_or_default();
    let commits = list("git")
        .iter()
        .filter_map(|g| {
            let c = g["commits"].get(0)?;
            let mut out = json!({"repoURL": g["repoURL"], "id": c["id"], "message": c["subject"], "author": c["author"], "committer": c["committer"]});
            for key in ["branch", "tag"] {
                if c[key].is_string() {
                    out[key] = c[key].clone();
                }
            }
            Some(out)
        })
        .collect();
    let images = list("images")
        .iter()
        .filter_map(|i| {
            let r = i["references"].get(0)?;
            Some(json!({"repoURL": i["repoURL"], "tag": r["tag"], "digest": r["digest"]}))
        })
        .collect();
    let charts = list("charts")
        .iter()
        .filter_map(|c| {
            let version = c["versions"].get(0)?;
            let mut out = json!({"repoURL": c["repoURL"], "version": version});
            if c["name"].is_string() {
                out["name"] = c["name"].clone();
            }
            Some(out)
        })
        .collect();
    (commits, images, charts)
}

/// Fills in an image's digest from what the Warehouse discovered, when the user gave a tag only.
fn complete(image: &mut Value, warehouse: &Value) {
    if image.get("digest").is_some() {
        return;
    }
    let found = warehouse["status"]["discoveredArtifacts"]["images"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let digest = found
        .iter()
        .filter(|i| i["repoURL"] == image["repoURL"])
        .flat_map(|i| i["references"].as_array().cloned().unwrap_or_default())
        .find(|r| r["tag"] == image["tag"])
        .and_then(|r| r["digest"].as_str().map(str::to_string));
    if let Some(digest) = digest {
        image["digest"] = json!(digest);
    }
}

pub(super) async fn create(client: &Client, r: Request<'_>) -> Result<(), CliError> {
    if r.images.is_empty() && r.commits.is_empty() && r.charts.is_empty() && !r.newest {
        return Err(CliError::new(
            exit::USAGE,
            "a Freight needs --newest, or at least one --image, --commit or --chart",
        ));
    }
    let mut images = r
        .images
        .iter()
        .map(|i| image(i))
        .collect::<Result<Vec<_>, _>>()?;
    let mut commits = r
        .commits
        .iter()
        .map(|c| commit(c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut charts = r
        .charts
        .iter()
        .map(|c| chart(c))
        .collect::<Result<Vec<_>, _>>()?;
    let warehouse = client
        .send(
            reqwest::Method::GET,
            &format!("/v1/projects/{}/warehouses/{}", r.project, r.warehouse),
            None,
        )
        .await?;
    if r.newest {
        let (c, i, h) = newest(&warehouse);
        if c.is_empty() && i.is_empty() && h.is_empty() {
            return Err(CliError::new(
                exit::FAILED,
                format!(
                    "Warehouse {} has discovered nothing yet: run `dray refresh warehouse {} -p {} --wait` first",
                    r.warehouse, r.warehouse, r.project
                ),
            ));
        }
        commits.extend(c);
        images.extend(i);
        charts.extend(h);
    }
    for image in &mut images {
        complete(image, &warehouse);
    }
    let mut doc = json!({
        "apiVersion": "kargo.akuity.io/v1alpha1",
        "kind": "Freight",
        "metadata": {"name": "", "namespace": r.project},
        "origin": {"kind": "Warehouse", "name": r.warehouse},
        "images": images,
        "commits": commits,
        "charts": charts,
    });
    if let Some(alias) = r.alias {
        doc["alias"] = json!(alias);
    }
    let sources = [Source {
        name: "dray freight create".into(),
        content: doc.to_string(),
    }];
    let answer = client
        .send(
            reqwest::Method::POST,
            "/v1/apply",
            Some(json!({ "sources": sources })),
        )
        .await?;
    let name = answer["items"][0]["name"]
        .as_str()
        .unwrap_or("?")
        .to_string();
    let freight = client
        .send(
            reqwest::Method::GET,
            &format!("/v1/projects/{}/freight/{name}", r.project),
            None,
        )
        .await?;
    let alias = freight["alias"].as_str().unwrap_or("");
    println!(
        "Freight {name} ({alias}) {}",
        answer["items"][0]["action"].as_str().unwrap_or("created")
    );
    Ok(())
}

pub(super) async fn refresh(
    client: &Client,
    project: &str,
    name: &str,
    wait: bool,
) -> Result<(), CliError> {
    let answer = client
        .send(
            reqwest::Method::POST,
            &format!("/v1/projects/{project}/warehouses/{name}/refresh"),
            None,
        )
        .await?;
    let token = answer["token"].as_str().unwrap_or_default().to_string();
    if !wait {
        println!("Warehouse {project}/{name}: discovery requested");
        return Ok(());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let warehouse = loop {
        let w = client
            .send(
                reqwest::Method::GET,
                &format!("/v1/projects/{project}/warehouses/{name}"),
                None,
            )
            .await?;
        let status: WarehouseStatus = super::promote::status_of(&w, "Warehouse")?;
        if status.last_handled_refresh.as_deref() == Some(token.as_str()) {
            break status;
        }
        if std::time::Instant::now() > deadline {
            return Err(CliError::new(
                exit::FAILED,
                format!("Warehouse {project}/{name}: the discovery did not end within 10 minutes"),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let status = warehouse;
    let found = status.discovered_artifacts.clone().unwrap_or_default();
    for git in found["git"].as_array().into_iter().flatten() {
        let commits = git["commits"].as_array().map_or(0, Vec::len);
        let newest = &git["commits"][0];
        let what = newest["tag"]
            .as_str()
            .or(newest["branch"].as_str())
            .unwrap_or("");
        println!(
            "{}: {commits} candidate commit(s), newest {} ({what}) {}",
            git["repoURL"].as_str().unwrap_or("?"),
            newest["id"]
                .as_str()
                .map_or("-", |id| &id[..id.len().min(7)]),
            newest["subject"].as_str().unwrap_or("")
        );
    }
    if let Some(freight) = &status.last_freight_id {
        println!("Freight: {freight}");
    }
    match status.message.as_deref() {
        Some(problems) => Err(CliError::new(
            exit::FAILED,
            format!("Warehouse {project}/{name}: {problems}"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_artifact_references() {
        assert_eq!(
            image("localhost:5000/web:1.2@sha256:ab").unwrap(),
            json!({"repoURL": "localhost:5000/web", "tag": "1.2", "digest": "sha256:ab"})
        );
        assert!(image("localhost:5000/web").is_err());
        assert_eq!(
            commit("git@host:org/repo.git#abc").unwrap(),
            json!({"repoURL": "git@host:org/repo.git", "id": "abc"})
        );
        assert_eq!(
            chart("https://charts.example/web:1.0.0").unwrap(),
            json!({"repoURL": "https://charts.example", "name": "web", "version": "1.0.0"})
        );
        assert_eq!(
            chart("oci://reg.example/charts/web:1.0.0").unwrap(),
            json!({"repoURL": "oci://reg.example/charts/web", "version": "1.0.0"})
        );
    }
}
