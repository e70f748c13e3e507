//! The chart corpus against today's Helm: Helm v4's SDK (PyPI `helm-python-sdk`, installed by
//! tests/run.sh; `helm4_render.py` renders with a client-side dry-run install, as `helm
//! template` does). Dray is given the capabilities Helm v4 reports (its Kubernetes version and
//! API versions), and every chart of `tests/charts`, with its defaults and each `ci/*.yaml`,
//! must render the same documents (parsed) outside hooks. Where Helm 3.6 and Helm 4 differ,
//! Dray follows Helm 4 (import-values) unless the test says otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use chart::{Chart, Options, yaml};
use gotmpl::Value;

#[path = "../../tests/src/helm_tool.rs"]
#[allow(dead_code)]
mod helm_tool;

fn sdk() -> PathBuf {
    if let Some(path) = std::env::var_os("DRAY_HELM_SDK") {
        return path.into();
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/dray-tools/helm-sdk")
}

/// Helm v4's manifest and capabilities for `chart` with `values` (YAML).
fn helm4(chart: &Path, values: &str) -> Result<(String, String, Vec<String>), String> {
    let sdk = sdk();
    assert!(
        sdk.join("helm_python").is_dir(),
        "Helm v4's SDK is missing at {}: run tests/run.sh, which installs it (pip install --target ~/.cache/dray-tools/helm-sdk helm-python-sdk==0.2.2)",
        sdk.display()
    );
    let parsed = yaml::load(values)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .unwrap_or(Value::map([]));
    let file = tempfile::NamedTempFile::new().expect("a file");
    std::fs::write(file.path(), chart::funcs::to_json(&parsed, false)).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/helm4_render.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(chart)
        .arg(file.path())
        .args(["rel1", "shop"])
        .env("DRAY_HELM_SDK", &sdk)
        .output()
        .expect("python3 runs");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    let caps = answer["capabilities"].as_str().unwrap_or("");
    let probe = chart::read_printed(caps, false).unwrap_or_else(|e| panic!("{e}"));
    let fields = match probe.first() {
        Some((_, Value::Map(m))) => m.clone(),
        _ => return Err(format!("no capabilities in {caps}")),
    };
    let kube = fields
        .get("kube")
        .map(|v| gotmpl::sprig::strval(&v))
        .unwrap_or_default();
    let apis: Vec<String> = fields
        .get("apis")
        .map(|v| gotmpl::sprig::strval(&v))
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    Ok((
        answer["manifest"].as_str().unwrap_or("").to_string(),
        kube,
        apis,
    ))
}

fn compare(chart: &Path, values: &str) -> Result<(), String> {
    let (theirs, kube, apis) = helm4(chart, values).map_err(|e| format!("Helm v4 failed: {e}"))?;
    let given = yaml::load(values)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .unwrap_or(Value::map([]));
    let loaded = Chart::load_dir(chart).map_err(|e| format!("Dray cannot load it: {e}"))?;
    let docs = chart::render(
        &loaded,
        &Options {
            release_name: "rel1".into(),
            namespace: "shop".into(),
            values: given,
            kube_version: kube,
            api_versions: apis,
            default_api_versions: false,
            ..Options::default()
        },
    )
    .map_err(|e| format!("Dray cannot render it: {e}"))?;
    let manifests: Vec<chart::Document> = docs.into_iter().filter(|d| d.hook.is_none()).collect();
    let ours = chart::print(&manifests);
    let (a, b) = (
        chart::read_printed(&theirs, false).unwrap_or_else(|e| panic!("{e}")),
        chart::read_printed(&ours, false).unwrap_or_else(|e| panic!("{e}")),
    );
    if a != b {
        return Err(format!(
            "the documents differ\nhelm 4:\n{theirs}\ndray:\n{ours}"
        ));
    }
    Ok(())
}

#[test]
fn the_chart_corpus_renders_as_helm_4_renders_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts");
    let created = tempfile::tempdir().expect("a dir");
    helm_tool::run(&["create", "created"], created.path());
    // The corpus, and charts where Helm 4 and Helm 3.6 disagree (checked here only).
    let today = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts-helm4");
    let mut charts: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("the corpus")
        .chain(std::fs::read_dir(&today).expect("the Helm 4 charts"))
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.join("Chart.yaml").is_file())
        .collect();
    charts.sort();
    charts.push(created.path().join("created"));
    let mut problems = Vec::new();
    let mut renders = 0;
    for chart in &charts {
        let mut values = vec![("defaults".to_string(), "{}".to_string())];
        if let Ok(entries) = std::fs::read_dir(chart.join("ci")) {
            let mut files: Vec<_> = entries.map(|e| e.expect("an entry").path()).collect();
            files.sort();
            for f in files {
                values.push((
                    f.display().to_string(),
                    std::fs::read_to_string(&f).expect("values"),
                ));
            }
        }
        for (name, text) in values {
            renders += 1;
            if let Err(e) = compare(chart, &text) {
                problems.push(format!("{} with {name}: {e}", chart.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {renders} renders differ:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
}
