//! Dray at scale: 1,000 Stages and 100,000 Freight in the store. Restart to ready, memory,
//! listing the 600 Stages of one project, what an idle daemon costs per minute, 50 Stages
//! promoting at once on this machine's cores, and auto-promotion over the 600 Stages and 100,000
//! Freight (switching it on, then one new Freight). The daemon runs as its own process (the release
//! `dray` binary), so its RSS, CPU time and disk writes are its own.
//!
//!     cargo build --release -p dray && cargo bench -p dray-tests --bench scale

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dray::resource::Kind;
use dray::store::{StatusMode, Store};
use dray_tests::manifests::object;
use serde_json::{Value, json};

const STAGES_BIG: usize = 600;
const STAGES_OTHER: usize = 400;
const WAREHOUSES: usize = 50;
const FREIGHT: usize = 100_000;
const BURST: usize = 50;

fn stage(warehouse: &str) -> Value {
    json!({"spec": {
        "requestedFreight": [{"origin": {"kind": "Warehouse", "name": warehouse}, "sources": {"direct": true}}],
        "promotionTemplate": {"spec": {"steps": [{"uses": "compose-output", "as": "note", "config": {"stage": "${{ ctx.stage }}"}}]}}
    }})
}

/// Writes the projects, Warehouses, Stages and Freight straight into a store.
fn populate(data_dir: &std::path::Path) {
    let store = Store::open(&data_dir.join("dray.redb")).expect("the store");
    store
        .write(|tx| {
            for (project, stages) in [("big", STAGES_BIG), ("other", STAGES_OTHER), ("burst", BURST)] {
                tx.put(object(Kind::Project, "", project, json!({"spec": {}})), None, StatusMode::Keep)?;
                for w in 0..WAREHOUSES.min(stages) {
                    // A Manual Warehouse: discovery has nothing to do, as for a pipeline at rest.
                    let spec = json!({"spec": {"freightCreationPolicy": "Manual", "interval": "5m",
                        "subscriptions": [{"image": {"repoURL": format!("registry.invalid/app-{w}")}}]}});
                    tx.put(object(Kind::Warehouse, project, &format!("w{w}"), spec), None, StatusMode::Keep)?;
                }
                for s in 0..stages {
                    let w = if project == "burst" { 0 } else { s % WAREHOUSES };
                    tx.put(object(Kind::Stage, project, &format!("s{s:04}"), stage(&format!("w{w}"))), None, StatusMode::Keep)?;
                }
            }
            Ok::<(), dray::store::StoreError>(())
        })
        .expect("stages");
    let start = std::time::SystemTime::now() - Duration::from_secs(FREIGHT as u64);
    for batch in 0..FREIGHT / 5000 {
        store
            .write(|tx| {
                for i in batch * 5000..(batch + 1) * 5000 {
                    let w = i % WAREHOUSES;
                    let name = format!("{:040x}", i as u128 * 2654435761);
                    let at = humantime::format_rfc3339_millis(start + Duration::from_secs(i as u64));
                    let mut o = object(Kind::Freight, "big", &name, json!({
                        "alias": format!("freight-{i}"),
                        "origin": {"kind": "Warehouse", "name": format!("w{w}")},
                        "discoveredAt": at.to_string(),
                        "images": [{"repoURL": format!("registry.invalid/app-{w}"), "tag": format!("1.{i}.0"), "digest": format!("sha256:{i:064x}")}],
                    }));
                    o.metadata.labels.insert("kargo.akuity.io/alias".into(), format!("freight-{i}"));
                    tx.put(o, None, StatusMode::Replace)?;
                }
                Ok::<(), dray::store::StoreError>(())
            })
            .expect("freight");
    }
    // One Freight for the burst of promotions.
    store
        .write(|tx| {
            let mut o = object(Kind::Freight, "burst", &format!("{:040x}", 7), json!({
                "alias": "burst", "origin": {"kind": "Warehouse", "name": "w0"},
                "images": [{"repoURL": "registry.invalid/app-0", "tag": "1.0.0", "digest": "sha256:0"}],
            }));
            o.metadata.labels.insert("kargo.akuity.io/alias".into(), "burst".into());
            tx.put(o, None, StatusMode::Replace)?;
            Ok::<(), dray::store::StoreError>(())
        })
        .expect("burst freight");
}

struct Running {
    child: Child,
    url: String,
    token: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dray serve` and returns it once `/readyz` answers, with the time that took.
/// `wrapped`: run it under the command in `SCALE_WRAP` (`heaptrack -o FILE`, say), if set.
fn serve(data_dir: &std::path::Path, wrapped: bool) -> (Running, Duration) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a port")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    let wrapper = std::env::var("SCALE_WRAP").ok().filter(|_| wrapped);
    let mut words = wrapper.iter().flat_map(|w| w.split_whitespace());
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(dray_tests::dray_bin());
            c
        }
        None => Command::new(dray_tests::dray_bin()),
    };
    let child = command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data_dir)
        .env("DRAY_LOG", "warn")
        .envs(
            std::env::var("SCALE_DAEMON_LOG")
                .ok()
                .map(|_| ("DRAY_LOG", "info")),
        )
        .stdout(Stdio::null())
        .stderr(match std::env::var_os("SCALE_DAEMON_LOG") {
            // SCALE_DAEMON_LOG=FILE: the daemon's log at `info`, appended to FILE.
            Some(file) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .map_or_else(|_| Stdio::null(), Stdio::from),
            None => Stdio::null(),
        })
        .spawn()
        .expect("dray serve starts");
    let http = dray_tests::blocking_client();
    loop {
        if http
            .get(format!("{url}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not ready after 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let ready = started.elapsed();
    let token = std::fs::read_to_string(dray::service::token_path(data_dir))
        .expect("token")
        .trim()
        .to_string();
    (Running { child, url, token }, ready)
}

fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key).map(|v| {
                v.split_whitespace()
                    .next()
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

/// CPU time (user + system) of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
}

/// `VmRSS` in MiB, with its anonymous (heap) and file-backed (mapped code and files) parts.
fn rss(pid: u32) -> String {
    let mib = |key| proc_field(pid, "status", key) / 1024;
    format!(
        "{} MiB ({} anonymous, {} file-backed)",
        mib("VmRSS:"),
        mib("RssAnon:"),
        mib("RssFile:")
    )
}

fn percentile(times: &mut [Duration], p: f64) -> f64 {
    times.sort();
    times[((times.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

fn main() {
    // SCALE_DATA_DIR=DIR only populates DIR, to start a daemon on it by hand (under heaptrack,
    // say).
    if let Some(dir) = std::env::var_os("SCALE_DATA_DIR") {
        populate(std::path::Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().expect("a data dir");
    let t = Instant::now();
    populate(dir.path());
    println!(
        "populated 1,000 Stages (600 + 400), {WAREHOUSES} Warehouses, {FREIGHT} Freight in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let size = std::fs::metadata(dir.path().join("dray.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!("database file: {:.0} MiB", size as f64 / 1048576.0);

    // The first start compiles the built-in plugins into the data dir's cache; then restarts.
    let (first, took) = serve(dir.path(), false);
    println!(
        "first start (compiles the built-in plugins): {:.2} s",
        took.as_secs_f64()
    );
    // Cranelift optimizes them in the background; the restarts read its code from the cache,
    // as every start of an installed daemon does.
    let cached = || {
        std::fs::read_dir(dir.path().join("cache").join("plugins"))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
                })
                .count()
            })
            .unwrap_or(0)
    };
    let waiting = Instant::now();
    while cached() < dray::runtime::BUILTIN_PLUGINS.len() {
        assert!(
            waiting.elapsed() < Duration::from_secs(600),
            "the built-in plugins were not optimized in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "  optimized in the background {:.1} s later",
        waiting.elapsed().as_secs_f64()
    );
    drop(first);
    // SCALE_QUICK=1 skips the restarts and the idle minute (for profiling the passes).
    let quick = std::env::var_os("SCALE_QUICK").is_some();
    let mut readies = Vec::new();
    for _ in 0..if quick { 1 } else { 5 } {
        let (daemon, took) = serve(dir.path(), false);
        readies.push(took);
        drop(daemon);
    }
    println!(
        "restart to ready (5 runs): p50 {:.0} ms, max {:.0} ms",
        percentile(&mut readies, 0.5),
        percentile(&mut readies, 1.0)
    );

    let (daemon, _) = serve(dir.path(), true);
    let pid = daemon.child.id();
    println!("RSS when ready: {}", rss(pid));
    std::thread::sleep(Duration::from_secs(if quick { 5 } else { 20 })); // start-up work (rescan, garbage collection) settles
    println!("RSS after start and 20 s: {}", rss(pid));

    let http = dray_tests::blocking_client();
    let get = |path: &str| {
        http.get(format!("{}{path}", daemon.url))
            .bearer_auth(&daemon.token)
            .send()
            .expect("request")
            .json::<Value>()
            .expect("json")
    };
    let mut lists = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let list = get("/v1/projects/big/stages");
        lists.push(t.elapsed());
        assert_eq!(list["items"].as_array().map(Vec::len), Some(STAGES_BIG));
    }
    println!(
        "list the 600 Stages of one project (30 runs): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&mut lists, 0.5),
        percentile(&mut lists, 0.99)
    );

    let (cpu0, io0) = (cpu_ticks(pid), proc_field(pid, "io", "write_bytes:"));
    std::thread::sleep(Duration::from_secs(if quick { 1 } else { 60 }));
    let (cpu1, io1) = (cpu_ticks(pid), proc_field(pid, "io", "write_bytes:"));
    println!(
        "idle for 60 s: CPU {:.2} s ({:.2}% of one core), disk writes {} KiB",
        (cpu1 - cpu0) as f64 / 100.0,
        (cpu1 - cpu0) as f64 / 60.0,
        (io1 - io0) / 1024
    );

    // 50 Stages promoting at once.
    let t = Instant::now();
    for s in 0..BURST {
        let answer = http
            .post(format!(
                "{}/v1/projects/burst/stages/s{s:04}/promote",
                daemon.url
            ))
            .bearer_auth(&daemon.token)
            .json(&json!({"freight": "burst"}))
            .send()
            .expect("promote");
        assert!(answer.status().is_success(), "{:?}", answer.text());
    }
    loop {
        let list = get("/v1/projects/burst/promotions");
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let done = items
            .iter()
            .filter(|p| p["status"]["phase"] == "Succeeded")
            .count();
        assert!(
            items
                .iter()
                .all(|p| !matches!(p["status"]["phase"].as_str(), Some("Failed" | "Errored"))),
            "{list:#}"
        );
        if done == BURST {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "{done} of {BURST} done after 300 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    println!(
        "{BURST} Stages promoting at once: all Succeeded in {:.0} ms ({:.1} promotions/s)",
        took.as_secs_f64() * 1000.0,
        BURST as f64 / took.as_secs_f64()
    );

    // Auto-promotion switched on for all 600 Stages of the project with 100,000 Freight: each
    // takes its Warehouse's newest Freight; then one new Freight reaches its 12 Stages.
    let apply = |yaml: &str| {
        let answer = http
            .post(format!("{}/v1/apply", daemon.url))
            .bearer_auth(&daemon.token)
            .header("Content-Type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .expect("apply");
        assert!(answer.status().is_success(), "{:?}", answer.text());
    };
    let succeeded = || {
        get("/v1/projects/big/promotions")["items"]
            .as_array()
            .map_or(0, |items| {
                items
                    .iter()
                    .filter(|p| p["status"]["phase"] == "Succeeded")
                    .count()
            })
    };
    let wait_for = |what: &str, count: usize| {
        let t = Instant::now();
        while succeeded() < count {
            assert!(
                t.elapsed() < Duration::from_secs(600),
                "{what}: {} of {count} after 600 s",
                succeeded()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        t.elapsed()
    };
    let cpu = cpu_ticks(pid);
    let t = Instant::now();
    apply(
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: ProjectConfig\nmetadata: {name: big, namespace: big}\n\
         spec:\n  promotionPolicies:\n  - stageSelector: {name: \"glob:*\"}\n    autoPromotionEnabled: true\n",
    );
    wait_for("catch-up", STAGES_BIG);
    println!(
        "auto-promotion switched on over {STAGES_BIG} Stages and {FREIGHT} Freight: all {STAGES_BIG} promoted in {:.2} s (CPU {:.2} s)",
        t.elapsed().as_secs_f64(),
        (cpu_ticks(pid) - cpu) as f64 / 100.0
    );
    // SCALE_PROFILE=FILE records the daemon with perf (call stacks) while the new Freight goes
    // through.
    let profile = std::env::var_os("SCALE_PROFILE").map(|file| {
        let perf = Command::new("perf")
            .args(["record", "-F", "1999", "--call-graph", "dwarf,16384", "-o"])
            .arg(file)
            .args(["-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("perf runs");
        std::thread::sleep(Duration::from_secs(2));
        perf
    });
    let cpu = cpu_ticks(pid);
    let t = Instant::now();
    if quick {
        println!("new Freight applied at {:?}", std::time::SystemTime::now());
    }
    apply(
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Freight\nmetadata: {name: ignored, namespace: big}\nalias: newest\n\
         origin: {kind: Warehouse, name: w0}\nimages:\n- {repoURL: registry.invalid/app-0, tag: 2.0.0, digest: \"sha256:2\"}\n",
    );
    let newest = get("/v1/projects/big/freight/newest")["metadata"]["name"]
        .as_str()
        .expect("the new Freight")
        .to_string();
    // Its Stages (s0000, s0050, …) are read one by one: listing the project's 600-odd
    // Promotions every 20 ms would load the daemon as much as the work being timed.
    let stages_on_w0 = STAGES_BIG.div_ceil(WAREHOUSES);
    let holds_newest = |s: usize| {
        get(&format!("/v1/projects/big/stages/s{s:04}"))["status"]["freightHistory"][0]
            .to_string()
            .contains(&newest)
    };
    let mut waiting: Vec<usize> = (0..STAGES_BIG).step_by(WAREHOUSES).collect();
    assert_eq!(waiting.len(), stages_on_w0);
    while !waiting.is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "new Freight: {} Stages still waiting after 600 s",
            waiting.len()
        );
        waiting.retain(|&s| !holds_newest(s));
        if !waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if let Some(mut perf) = profile {
        let _ = Command::new("kill")
            .args(["-INT", &perf.id().to_string()])
            .status();
        let _ = perf.wait();
    }
    println!(
        "a new Freight with auto-promotion on: its {stages_on_w0} Stages promoted in {:.0} ms (CPU {:.2} s)",
        t.elapsed().as_secs_f64() * 1000.0,
        (cpu_ticks(pid) - cpu) as f64 / 100.0
    );
    println!(
        "RSS at the end: {}; at its highest (VmHWM): {} MiB",
        rss(pid),
        proc_field(pid, "status", "VmHWM:") / 1024
    );
    // SCALE_HOLD=SECONDS keeps the daemon that long before it stops, to look at it.
    if let Some(seconds) = std::env::var("SCALE_HOLD")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        println!("holding the daemon (pid {pid}) for {seconds} s");
        std::thread::sleep(Duration::from_secs(seconds));
    }
    // SCALE_SMAPS=1: the mappings that hold most of it.
    if std::env::var_os("SCALE_SMAPS").is_some() {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let mut mapping = "";
        let mut held = Vec::new();
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') && !first.ends_with(':') {
                mapping = line;
            } else if first == "Rss:" {
                let kib: u64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse().ok())
                    .unwrap_or(0);
                held.push((kib, mapping));
            }
        }
        held.sort_by_key(|h| std::cmp::Reverse(h.0));
        for (kib, mapping) in held.iter().take(8) {
            let mut range = mapping.split_whitespace().next().unwrap_or("").split('-');
            let size = match (range.next(), range.next()) {
                (Some(a), Some(b)) => {
                    u64::from_str_radix(b, 16).unwrap_or(0)
                        - u64::from_str_radix(a, 16).unwrap_or(0)
                }
                _ => 0,
            };
            let name = mapping.split_whitespace().nth(5).unwrap_or("(anonymous)");
            println!(
                "  {} MiB resident of a {} MiB mapping: {name}",
                kib / 1024,
                size >> 20
            );
        }
    }
}
