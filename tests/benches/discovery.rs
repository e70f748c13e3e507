//! Discovery costs: how long a Warehouse refresh takes when the repository has not changed
//! (10,000 commits), next to what a script would run (`git ls-remote`, `git fetch`); and how long
//! a signed push webhook takes to be acknowledged and to turn into visible Freight; what an image
//! discovery over a real registry holding 10,000 tags costs it when nothing is new (requests,
//! time), next to `curl | sort -V`; and how a per-registry rate limit slows one registry only.
//!
//!     cargo bench -p dray-tests --bench discovery

use std::process::Command;
use std::time::{Duration, Instant};

use dray_tests::git::{GitDaemon, Repos};
use dray_tests::{Daemon, manifests};
use hmac::Mac;

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    let at =
        |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    println!(
        "{what:<58} runs {:>3}  p50 {:>8.2} ms  p99 {:>8.2} ms",
        times.len(),
        at(0.5),
        at(0.99)
    );
}

async fn refresh(daemon: &Daemon, warehouse: &str) {
    let answer: serde_json::Value = daemon
        .api(
            reqwest::Method::POST,
            &format!("/v1/projects/bench/warehouses/{warehouse}/refresh"),
        )
        .send()
        .await
        .expect("refresh")
        .json()
        .await
        .expect("json");
    let token = answer["token"].as_str().expect("a token").to_string();
    loop {
        let w = daemon
            .get_json(&format!("/v1/projects/bench/warehouses/{warehouse}"))
            .await;
        if w["status"]["lastHandledRefresh"] == token.as_str() {
            assert!(w["status"]["message"].is_null(), "{:#}", w["status"]);
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn freight_count(daemon: &Daemon) -> usize {
    daemon.get_json("/v1/projects/bench/freight").await["items"]
        .as_array()
        .map_or(0, Vec::len)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let repos = Repos::new();
    repos.create_with_history("big.git", &[("app/main.go".into(), "v1\n".into())], 10_000);
    repos.create("small.git", &[("app/main.go", "v1\n")]);
    let server = GitDaemon::start(&repos);
    let big = format!("{}/big.git", server.url);
    let small = format!("{}/small.git", server.url);

    runtime.block_on(async {
        let daemon = Daemon::start().await;
        let secret = "s3cret";
        let warehouses = manifests::project("bench", &[&format!("git: {{repoURL: \"{big}\"}}")])
            .replace("spec:\n  subscriptions:", "spec:\n  interval: 1h\n  subscriptions:")
            + &manifests::project("bench", &[&format!("git: {{repoURL: \"{small}\"}}")])
                .replace("name: app,", "name: hooked,")
                .replace("spec:\n  subscriptions:", "spec:\n  interval: 1h\n  subscriptions:")
                .split("---\n")
                .skip(1)
                .map(|d| format!("---\n{d}"))
                .collect::<String>()
            + "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: bench, namespace: bench}\n\
               spec:\n  webhookReceivers:\n  - name: github\n    github: {secretRef: {name: hook}}\n---\n\
               apiVersion: v1\nkind: Secret\nmetadata:\n  name: hook\n  namespace: bench\n  labels: {kargo.akuity.io/cred-type: generic}\n\
               stringData: {secret: s3cret}\n";
        let r = daemon.apply(&warehouses).await;
        assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());

        // The first discovery fetches the whole history into the mirror.
        let started = Instant::now();
        refresh(&daemon, "app").await;
        report("first discovery, 10,000 commits (clone into the mirror)", vec![started.elapsed()]);
        let mut unchanged = Vec::new();
        for _ in 0..50 {
            let started = Instant::now();
            refresh(&daemon, "app").await;
            unchanged.push(started.elapsed());
        }
        report("refresh of the unchanged repository (request -> done)", unchanged);

        // Webhook to Freight, on the small repository.
        let receivers = daemon.get_json("/v1/projects/bench/webhookreceivers").await;
        let path = receivers["items"][0]["path"].as_str().expect("a receiver").to_string();
        let client = dray::tls::client();
        let (mut acks, mut visible) = (Vec::new(), Vec::new());
        for i in 0..30 {
            let before = freight_count(&daemon).await;
            let id = repos.commit("small.git", "main", &[("app/main.go", &format!("v{}\n", i + 2))], "change");
            let body = serde_json::json!({
                "ref": "refs/heads/main",
                "repository": {"clone_url": small},
                "commits": [{"id": id, "added": [], "modified": ["app/main.go"], "removed": []}],
            })
            .to_string();
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("a key");
            mac.update(body.as_bytes());
            let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            let started = Instant::now();
            let r = client
                .post(format!("{}{path}", daemon.url))
                .header("X-GitHub-Event", "push")
                .header("X-Hub-Signature-256", signature)
                .body(body)
                .send()
                .await
                .expect("delivered");
            acks.push(started.elapsed());
            assert_eq!(r.status(), 200);
            while freight_count(&daemon).await <= before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            visible.push(started.elapsed());
        }
        report("webhook acknowledged (signed push -> 200)", acks);
        report("webhook -> new Freight visible through the API", visible);
    });

    // What a script would run against the same unchanged repository.
    let mirror = tempfile::tempdir().expect("a mirror");
    let git = |args: &[&str]| {
        let started = Instant::now();
        let out = Command::new("git").args(args).output().expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        started.elapsed()
    };
    let dir = mirror.path().join("m.git");
    git(&[
        "clone",
        "-q",
        "--mirror",
        &big,
        dir.to_str().expect("utf-8"),
    ]);
    report(
        "git ls-remote (the unchanged check alone)",
        (0..50).map(|_| git(&["ls-remote", &big])).collect(),
    );
    let fetch: Vec<Duration> = (0..50)
        .map(|_| git(&["-C", dir.to_str().expect("utf-8"), "fetch", "-q", "origin"]))
        .collect();
    report("git fetch into an up-to-date mirror", fetch);

    // Choosing among 10,000 tags (the CPU part of an image discovery; the registry's tag list is
    // already read): semantic versions with pre-releases and junk tags mixed in.
    let tags: Vec<String> = (0..10_000)
        .map(|i| match i % 10 {
            0 => format!("sha-{i:07x}"),
            1 => format!("v{}.{}.{}-rc.{}", i / 1000, i / 100 % 10, i % 100, i % 7),
            9 => "latest".to_string(),
            _ => format!("{}.{}.{}", i / 1000, i / 100 % 10, i % 100),
        })
        .collect();
    for (name, sub) in [
        (
            "rank 10,000 tags: SemVer ^5.0.0, ignoring -rc",
            serde_json::json!({"repoURL": "r.invalid/app", "imageSelectionStrategy": "SemVer",
                "constraint": "^5.0.0", "ignoreTagsRegexes": ["-rc"]}),
        ),
        (
            "rank 10,000 tags: Lexical, allowing ^sha-",
            serde_json::json!({"repoURL": "r.invalid/app", "imageSelectionStrategy": "Lexical",
                "allowTagsRegexes": ["^sha-"]}),
        ),
    ] {
        let sub: dray::resource::ImageSubscription =
            serde_json::from_value(sub).expect("a subscription");
        let times: Vec<Duration> = (0..50)
            .map(|_| {
                let started = Instant::now();
                let ranked = dray::discovery::image::rank_tags(&sub, &tags).expect("ranked");
                assert!(!ranked.is_empty());
                started.elapsed()
            })
            .collect();
        report(name, times);
    }
    // What a script would run: filter and version-sort the same list with coreutils.
    let list = tags.join("\n") + "\n";
    let script: Vec<Duration> = (0..50)
        .map(|_| {
            let started = Instant::now();
            let mut child = Command::new("sh")
                .args(["-c", "grep -Ev -- '-rc|sha-|latest' | sort -V | tail -1"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("sh runs");
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(list.as_bytes())
                .expect("write");
            let out = child.wait_with_output().expect("sort");
            assert!(out.status.success());
            started.elapsed()
        })
        .collect();
    report(
        "for comparison: grep | sort -V | tail -1 over the same tags",
        script,
    );
    runtime.block_on(registry_costs());
}

fn image_project(warehouses: &[(&str, String)]) -> String {
    let mut out = "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: bench}\n"
        .to_string();
    for (name, repo) in warehouses {
        out.push_str(&format!(
            "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: Warehouse\nmetadata: {{name: {name}, namespace: bench}}\n\
             spec:\n  interval: 1h\n  subscriptions:\n  - image: {{repoURL: \"{repo}\", constraint: \"^1.0.0\"}}\n"
        ));
    }
    out
}

/// Image discovery against a real registry (Debian's docker-registry) holding 10,000 tags.
async fn registry_costs() {
    use dray_tests::registry::Registry;
    let registry = Registry::start();
    let tags: Vec<String> = (0..10_000)
        .map(|i| format!("1.{}.{}", i / 100, i % 100))
        .collect();
    registry.push_tags("bench/web", &tags).await;
    // The rate limit (20 requests a second by default) would pace back-to-back cycles; lift it
    // to measure what a cycle costs.
    let mut unlimited = dray::Config::default();
    unlimited.discovery.registry_requests_per_second = 100_000;
    let daemon = Daemon::start_with_config(unlimited)
        .await
        .expect("the daemon starts");
    let repo = format!("{}/bench/web", registry.address);
    let r = daemon.apply(&image_project(&[("web", repo.clone())])).await;
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    refresh(&daemon, "web").await;
    let before = registry.requests().len();
    let mut quiet = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        refresh(&daemon, "web").await;
        quiet.push(started.elapsed());
    }
    let requests = registry.requests()[before..].to_vec();
    let lists = requests.iter().filter(|r| r.contains("/tags/list")).count();
    let others = requests.len() - lists;
    println!(
        "quiet cycles over 10,000 tags: 50 cycles, {lists} tag-list requests, {others} other requests"
    );
    report(
        "refresh over 10,000 unchanged tags (request -> done)",
        quiet,
    );

    // What a script does each time: read the list and sort it to see whether the best moved.
    let url = format!("http://{}/v2/bench/web/tags/list", registry.address);
    let script: Vec<Duration> = (0..50)
        .map(|_| {
            let started = Instant::now();
            let out = Command::new("sh")
                .args(["-c", &format!("curl -sf '{url}' | tr -d '[]\"{{}}' | tr ',' '\\n' | grep -E '^[0-9]' | sort -V | tail -1")])
                .output()
                .expect("sh runs");
            assert!(out.status.success() && !out.stdout.is_empty());
            started.elapsed()
        })
        .collect();
    report("for comparison: curl tags/list | sort -V | tail -1", script);

    // A rate limit of 5 requests a second on each registry: 20 Warehouses on a busy registry
    // refreshed at once queue behind it; one on another registry is not slowed.
    let other = Registry::start();
    other.push("bench/api", "1.0.0", "one", &[]).await;
    let mut config = dray::Config::default();
    config.discovery.registry_requests_per_second = 5;
    let limited = Daemon::start_with_config(config)
        .await
        .expect("the daemon starts");
    let mut warehouses: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("busy{i}"),
                format!("{}/bench/web{i}", registry.address),
            )
        })
        .collect();
    for (i, _) in warehouses.iter().enumerate() {
        registry
            .push(&format!("bench/web{i}"), "1.0.0", "one", &[])
            .await;
    }
    warehouses.push(("quiet".into(), format!("{}/bench/api", other.address)));
    let named: Vec<(&str, String)> = warehouses
        .iter()
        .map(|(n, r)| (n.as_str(), r.clone()))
        .collect();
    let r = limited.apply(&image_project(&named)).await;
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    for (name, _) in &warehouses {
        refresh(&limited, name).await;
    }
    // Let the bucket fill again, then refresh everything at once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let names: Vec<String> = (0..20).map(|i| format!("busy{i}")).collect();
    let busy = futures_util::future::join_all(names.iter().map(|n| refresh(&limited, n)));
    let ((), quiet_done) = tokio::join!(
        async {
            busy.await;
        },
        async {
            refresh(&limited, "quiet").await;
            started.elapsed()
        }
    );
    let busy_done = started.elapsed();
    println!(
        "rate limit 5/s: 20 Warehouses on one registry refreshed at once done in {:.2} s; the Warehouse on another registry in {:.2} ms",
        busy_done.as_secs_f64(),
        quiet_done.as_secs_f64() * 1000.0
    );
}
