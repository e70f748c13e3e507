//! Charts rendered by Dray and by the real `helm template` (v3.6.2, installed by tests/run.sh):
//! the same documents from the same templates, compared parsed (same fields, same values), in
//! the same order.

use std::path::Path;
use std::process::Command;

#[path = "../../tests/src/helm_tool.rs"]
mod helm_tool;
use helm_tool::run as run_helm;

use chart::{Chart, Options, yaml};
use gotmpl::Value;

/// Renders `dir` with both, with `values` (YAML) as a values file, and compares.
fn same_as_helm(dir: &Path, values: &str) {
    same_as_helm_with(dir, values, &[]);
}

/// [`same_as_helm`] with `helm template` flags (`--include-crds`, `--skip-tests`, `--no-hooks`).
fn same_as_helm_with(dir: &Path, values: &str, flags: &[&str]) {
    if let Err(e) = compare_with(dir, values, values, flags) {
        panic!("{e}");
    }
}

/// Renders `dir` with helm given `helm_values` and with Dray given `dray_values`; the first
/// difference, if any.
fn compare(dir: &Path, helm_values: &str, dray_values: &str) -> Result<(), String> {
    compare_with(dir, helm_values, dray_values, &[])
}

fn compare_with(
    dir: &Path,
    helm_values: &str,
    dray_values: &str,
    flags: &[&str],
) -> Result<(), String> {
    // Outside the chart, so neither renderer sees it as a chart file.
    let values_file = std::env::temp_dir().join(format!(
        "dray-values-{}-{:?}.yaml",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&values_file, helm_values).expect("write");
    let mut args = vec![
        "template",
        "rel1",
        ".",
        "-f",
        values_file.to_str().expect("utf-8"),
        "--namespace",
        "shop",
    ];
    args.extend(flags);
    let theirs = helm_tool::try_run(&args, dir, &[]);
    std::fs::remove_file(&values_file).expect("remove");
    let theirs = theirs.map_err(|e| format!("helm failed: {e}"))?;
    let chart = Chart::load_dir(dir).map_err(|e| format!("Dray cannot load the chart: {e}"))?;
    let given = yaml::load(dray_values)
        .expect("values")
        .into_iter()
        .next()
        .unwrap_or(Value::map([]));
    let docs = chart::render(
        &chart,
        &Options {
            release_name: "rel1".into(),
            namespace: "shop".into(),
            values: given,
            include_crds: flags.contains(&"--include-crds"),
            skip_tests: flags.contains(&"--skip-tests"),
            disable_hooks: flags.contains(&"--no-hooks"),
            ..Options::default()
        },
    )
    .map_err(|e| format!("Dray cannot render {}: {e}", dir.display()))?;
    let ours = chart::print(&docs);
    let (a, b) = (
        chart::read_printed(&theirs, false).unwrap_or_else(|e| panic!("{e}")),
        chart::read_printed(&ours, false).unwrap_or_else(|e| panic!("{e}")),
    );
    if a.is_empty() {
        return Err(format!("helm rendered nothing:\n{theirs}"));
    }
    let sources = |d: &[(String, Value)]| d.iter().map(|(s, _)| s.clone()).collect::<Vec<_>>();
    if sources(&b) != sources(&a) {
        return Err(format!(
            "not the same documents in the same order\nhelm:\n{theirs}\ndray:\n{ours}"
        ));
    }
    for ((source, theirs_doc), (_, our_doc)) in a.iter().zip(&b) {
        if our_doc != theirs_doc {
            return Err(format!("{source} differs\nhelm:\n{theirs}\ndray:\n{ours}"));
        }
    }
    Ok(())
}

#[test]
fn the_helm_create_chart() {
    let dir = tempfile::tempdir().expect("a dir");
    run_helm(&["create", "demo"], dir.path());
    let chart = dir.path().join("demo");
    same_as_helm(&chart, "{}");
    // The comparison sees a difference when there is one.
    let e =
        compare(&chart, "{}", "replicaCount: 2").expect_err("different values render differently");
    assert!(e.contains("demo/templates/deployment.yaml differs"), "{e}");
    same_as_helm(
        &chart,
        "replicaCount: 3\nimage: {tag: 1.2.3}\nserviceAccount: {create: false}\ningress:\n  enabled: true\n  annotations: {kubernetes.io/ingress.class: nginx}\n  hosts:\n  - host: shop.example.com\n    paths: [{path: /, pathType: Prefix}]\n  tls:\n  - secretName: shop-tls\n    hosts: [shop.example.com]\nautoscaling: {enabled: true, targetMemoryUtilizationPercentage: 70}\nresources: {limits: {cpu: 100m, memory: 128Mi}}\nnodeSelector: {disk: ssd}\npodAnnotations: {prometheus.io/scrape: \"true\"}\n",
    );
}

/// A chart that looks like real ones: helpers, a library sub-chart, a sub-chart switched by a
/// condition, an aliased one switched by a tag, globals, `tpl`, `required`, `toYaml | nindent`,
/// `.Files.Glob`, a hook, a test, CRDs and a `.helmignore`.
#[test]
fn a_chart_with_sub_charts_hooks_and_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts/shop");
    same_as_helm(&dir, "{}");
    same_as_helm(
        &dir,
        "redis: {enabled: true}\ntags: {batch: false}\nnullMe: null\nannotations: {team: shop}\nglobal: {env: staging}\nimage: {tag: 9.9.9}\n",
    );
    same_as_helm_with(
        &dir,
        "jobs: {schedule: '@daily'}\n",
        &["--include-crds", "--skip-tests"],
    );
    same_as_helm_with(&dir, "{}", &["--no-hooks"]);
}

/// The corpus: every chart of `tests/charts` (charts that look like real ones: helpers,
/// capabilities, checksums, CRDs, RBAC ranges, `lookup`, `required`, `.Files`, `tpl`, a library
/// chart, globals through nested sub-charts, hooks with weights, Sprig at large, namespaces,
/// control flow), plus the `helm create` chart, each rendered with its defaults and with every
/// `ci/*.yaml` values file, as helm renders them. Every difference is reported.
#[test]
fn the_chart_corpus_renders_as_helm_renders_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts");
    let created = tempfile::tempdir().expect("a dir");
    run_helm(&["create", "created"], created.path());
    let mut charts: Vec<std::path::PathBuf> = std::fs::read_dir(&root)
        .expect("the corpus")
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
                let text = std::fs::read_to_string(&f).expect("values");
                values.push((f.display().to_string(), text));
            }
        }
        for (name, text) in values {
            renders += 1;
            if let Err(e) = compare_with(chart, &text, &text, &[]) {
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
    assert!(charts.len() >= 15, "the corpus has {} charts", charts.len());
}

/// `import-values`: a string imports a sub-chart's `exports.X` to the top level, a pair imports
/// a table where the parent says; the parent's own values win; an aliased dependency is found by
/// its alias, and missing tables are skipped.
#[test]
fn imported_values() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts/imports");
    same_as_helm(&dir, "{}");
    same_as_helm(&dir, "user: admin\ndatabaseService: {name: given}\n");
}

/// `values.schema.json`: values that meet the chart's schema and its sub-chart's render as helm
/// renders them; values that do not are refused by both, Dray naming each chart and value.
#[test]
fn values_checked_against_the_schema() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts/validated");
    same_as_helm(&dir, "{}");
    same_as_helm(
        &dir,
        "replicaCount: 3\nimage: {tag: 2.0.1}\nsidecar: {level: debug}\n",
    );
    let bad = "replicaCount: 0\nimage: {tag: latest, pullPolicy: Always}\nports: [{name: http, port: 70000}]\nsidecar: {level: loud}\n";
    let values_file = dir.join("../bad-values.yaml");
    std::fs::write(&values_file, bad).expect("write");
    let helm = helm_tool::try_run(
        &[
            "template",
            "rel1",
            ".",
            "-f",
            values_file.to_str().expect("utf-8"),
        ],
        &dir,
        &[],
    );
    std::fs::remove_file(&values_file).expect("remove");
    let helm = helm.expect_err("helm refuses the values");
    assert!(
        helm.contains("values don't meet the specifications"),
        "{helm}"
    );
    let chart = Chart::load_dir(&dir).expect("loads");
    let given = yaml::load(bad).expect("values").remove(0);
    let e = chart::render(
        &chart,
        &Options {
            values: given,
            ..Options::default()
        },
    )
    .expect_err("Dray refuses the values");
    for expected in [
        "values don't meet the specifications of the schema(s) in the following chart(s):\nvalidated:\n",
        "- replicaCount: ",
        "- image: ",
        "pullPolicy",
        "- image.tag: ",
        "- ports.0.port: ",
        "sidecar:\n- level: ",
    ] {
        assert!(
            e.0.contains(expected),
            "{expected:?} in\n{e}\nhelm said:\n{helm}"
        );
    }
}

/// Sub-charts packaged as `helm dependency build` leaves them (`charts/NAME-VERSION.tgz`), and a
/// packaged chart rendered as it is.
#[test]
fn packaged_charts() {
    let work = tempfile::tempdir().expect("a dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts/shop");
    let copy = work.path().join("shop");
    let status = Command::new("cp")
        .arg("-r")
        .arg(&fixture)
        .arg(&copy)
        .status()
        .expect("cp");
    assert!(status.success());
    for sub in ["redis", "worker"] {
        run_helm(
            &["package", &format!("charts/{sub}"), "-d", "charts"],
            &copy,
        );
        std::fs::remove_dir_all(copy.join("charts").join(sub)).expect("remove");
    }
    assert!(copy.join("charts/redis-0.1.0.tgz").exists());
    same_as_helm(&copy, "redis: {enabled: true}\n");
    // The whole chart packaged: Dray loads the archive as helm does.
    run_helm(&["package", "shop", "-d", "packaged"], work.path());
    let archive = work.path().join("packaged/shop-1.2.0.tgz");
    let from_archive = Chart::load(&archive).expect("loads");
    let from_dir = Chart::load(&copy).expect("loads");
    let options = Options {
        release_name: "rel1".into(),
        ..Options::default()
    };
    assert_eq!(
        chart::render(&from_archive, &options).expect("renders"),
        chart::render(&from_dir, &options).expect("renders")
    );
}

/// `chart::package` writes an archive the real helm reads: `helm template` of Dray's archive
/// renders what helm renders from the directory.
#[test]
fn packages_read_by_helm() {
    let work = tempfile::tempdir().expect("a dir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/charts/shop");
    let (name, version, bytes) = chart::package(&fixture).expect("packages");
    assert_eq!((name.as_str(), version.as_str()), ("shop", "1.2.0"));
    let archive = work.path().join("shop-1.2.0.tgz");
    std::fs::write(&archive, &bytes).expect("write");
    let from_archive = run_helm(&["template", "rel1", "shop-1.2.0.tgz"], work.path());
    let from_dir = run_helm(
        &["template", "rel1", &fixture.display().to_string()],
        work.path(),
    );
    assert_eq!(from_archive, from_dir);
    assert!(from_archive.contains("kind: Deployment"), "{from_archive}");
}

/// Archives that try to escape, link or explode are refused.
#[test]
fn hostile_archives_are_refused() {
    fn archive(entries: &[(&str, &[u8], tar::EntryType)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data, kind) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                header.set_link_name("/etc/passwd").expect("a link name");
            }
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).expect("append");
        }
        let tar = builder.into_inner().expect("a tar");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        gz.finish().expect("gzip")
    }
    let chart_yaml: &[u8] = b"apiVersion: v2\nname: x\nversion: 0.1.0\n";
    let ok = archive(&[("x/Chart.yaml", chart_yaml, tar::EntryType::Regular)]);
    assert!(Chart::from_archive(&ok, "ok.tgz").is_ok());
    for (name, bad, expected) in [
        (
            "escape",
            archive(&[("x/../../etc/x", b"x", tar::EntryType::Regular)]),
            "refused",
        ),
        (
            "link",
            archive(&[("x/Chart.yaml", b"", tar::EntryType::Symlink)]),
            "link",
        ),
        (
            "not gzip",
            b"not an archive".to_vec(),
            "not a chart archive",
        ),
    ] {
        let e = Chart::from_archive(&bad, name).expect_err(name);
        assert!(e.0.contains(expected), "{name}: {e}");
    }
    // A bomb: 100 MiB of zeros compresses to ~100 KiB; unpacking stops at the limit.
    let zeros = vec![0u8; 100 << 20];
    let bomb = archive(&[
        ("x/Chart.yaml", chart_yaml, tar::EntryType::Regular),
        ("x/big", &zeros, tar::EntryType::Regular),
    ]);
    assert!(bomb.len() < 1 << 20);
    let e = Chart::from_archive(&bomb, "bomb.tgz").expect_err("too big");
    assert!(e.0.contains("unpacks to more than"), "{e}");
}
