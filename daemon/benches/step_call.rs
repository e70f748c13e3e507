//! What a step call costs, next to what a user would otherwise do (a process per step).
//!
//!     cargo bench -p dray --bench step_call
//!
//! Prints a Markdown table for BENCHMARKS.md. The step is the built-in `compose-output` (in the
//! `steps` component) with an empty config: a fresh sandbox, instantiation, a call and the result checks, with nothing else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dray::runtime::cache::digest;
use dray::runtime::{BUILTIN_PLUGINS, Grants, Limits, Plugin, Runtime, StepContext};
use serde_json::json;

fn context() -> StepContext {
    StepContext {
        project: "bench".into(),
        stage: "bench".into(),
        promotion: String::new(),
        step_alias: "step-1".into(),
        freight: Vec::new(),
        vars: "{}".into(),
        outputs: "{}".into(),
    }
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn call(plugin: &Plugin, workdir: &std::path::Path) -> Duration {
    let started = Instant::now();
    let report = plugin
        .run(
            "compose-output",
            &context(),
            &json!({}),
            workdir,
            &Limits::default(),
        )
        .await;
    let took = started.elapsed();
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    took
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let bytes = BUILTIN_PLUGINS
        .iter()
        .find(|(n, _)| *n == "steps")
        .expect("the built-in steps")
        .1
        .to_vec();
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let workdir = tempfile::tempdir().expect("workdir");
    let mut rows: Vec<(String, String, String)> = Vec::new();

    // First compile of the built-in steps (Cranelift on every core, as `Runtime::new` does),
    // then loads of the cached native code.
    let runtime = Runtime::new(Some(cache_dir.path().to_path_buf())).expect("runtime");
    let started = Instant::now();
    let plugin = runtime
        .load("steps", bytes.clone(), &Grants::all())
        .await
        .expect("load");
    rows.push((
        format!(
            "first compile of `steps` ({:.1} MB component), load and describe",
            bytes.len() as f64 / 1e6
        ),
        ms(started.elapsed()),
        "–".into(),
    ));

    let (engine, cache) = runtime.compiler();
    let d = digest(&bytes);
    let mut loads: Vec<Duration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            let (_, how) = cache.load(engine, &bytes, &d).expect("cached load");
            assert_eq!(how, dray::runtime::Loaded::FromCache);
            started.elapsed()
        })
        .collect();
    rows.push((
        "cold load of the cached precompiled component (read file + deserialize), 200 runs".into(),
        ms(percentile(&mut loads, 0.5)),
        ms(percentile(&mut loads, 0.99)),
    ));

    // Hot path: sequential no-op step calls.
    for _ in 0..500 {
        call(&plugin, workdir.path()).await;
    }
    let mut hot = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        hot.push(call(&plugin, workdir.path()).await);
    }
    rows.push((
        "no-op step call (fresh sandbox + instantiate + call), sequential, 10,000 runs".into(),
        us(percentile(&mut hot, 0.5)),
        us(percentile(&mut hot, 0.99)),
    ));

    // 64 calls at once, 100 rounds each.
    let plugin = Arc::new(plugin);
    let dir = Arc::new(workdir.path().to_path_buf());
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (plugin, dir) = (plugin.clone(), dir.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(100);
            for _ in 0..100 {
                samples.push(call(&plugin, &dir).await);
            }
            samples
        }));
    }
    let mut concurrent = Vec::new();
    for t in tasks {
        concurrent.extend(t.await.expect("task"));
    }
    rows.push((
        "no-op step call, 64 concurrent callers on 2 cores, 6,400 runs".into(),
        us(percentile(&mut concurrent, 0.5)),
        us(percentile(&mut concurrent, 0.99)),
    ));

    // The alternative: a process per step.
    let mut spawns = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let started = Instant::now();
        let status = std::process::Command::new("/bin/true")
            .status()
            .expect("spawn /bin/true");
        assert!(status.success());
        spawns.push(started.elapsed());
    }
    rows.push((
        "spawning `/bin/true` per step (`std::process::Command`), 1,000 runs".into(),
        us(percentile(&mut spawns, 0.5)),
        us(percentile(&mut spawns, 0.99)),
    ));

    println!("| What | p50 | p99 |\n|---|---|---|");
    for (what, p50, p99) in rows {
        println!("| {what} | {p50} | {p99} |");
    }
}
