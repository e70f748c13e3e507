//! What the daemon counts for Prometheus, served at `GET /metrics` (OpenMetrics text).
//!
//! One [`Metrics`] is made in `service::run` and shared by the engine, discovery and the API;
//! each records what it does through a typed method, so a metric's name and labels are written
//! once, here. Names follow Prometheus' conventions (`dray_` prefix, base units, `_total` for
//! counters, which the encoder adds). Every label value comes from a bounded set — validated
//! project, Stage and step-kind names, a fixed list of webhook receiver types, registry and Git
//! hosts of configured subscriptions — never from an unauthenticated request, so no caller can
//! grow the series without limit.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::runtime::FailureKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    project: String,
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    project: String,
    stage: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    kind: String,
}

/// How a step call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// It finished its work.
    Succeeded,
    /// It answered "running": it is asked again later.
    Running,
    /// It failed; the reason is counted in `dray_step_failures_total`.
    Failed,
}

impl CallResult {
    fn as_str(self) -> &'static str {
        match self {
            CallResult::Succeeded => "succeeded",
            CallResult::Running => "running",
            CallResult::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    kind: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiscoveryLabels {
    /// `git`, `image` or `chart`.
    subscription: &'static str,
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    receiver: &'static str,
    result: &'static str,
}

/// The receiver types a webhook URL may name; anything else is counted as `unknown`.
const RECEIVERS: &[&str] = &[
    "github",
    "gitea",
    "gitlab",
    "bitbucket",
    "azure",
    "dockerhub",
    "quay",
    "harbor",
    "artifactory",
    "generic",
];

/// The daemon's metrics; cheap to clone (every clone records into the same registry).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

struct Inner {
    registry: Registry,
    promotions: Family<PhaseLabels, Counter>,
    promotion_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    step_calls: Family<CallLabels, Counter>,
    step_seconds: Family<StepLabels, Histogram, fn() -> Histogram>,
    step_failures: Family<FailureLabels, Counter>,
    verifications: Family<PhaseLabels, Counter>,
    discoveries: Family<DiscoveryLabels, Counter>,
    discovery_failures: Family<DiscoveryLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    queued: Gauge,
    running: Gauge,
    store_bytes: Gauge,
}

/// 0.1 s to about 40 min: a promotion from a quick render to a long pull request wait.
fn promotion_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.5, 12))
}

/// 1 ms to about 4 min: one call of a step.
fn step_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("dray");
        let promotions = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "promotions",
            "Promotions that ended, by project, Stage and phase",
            promotions.clone(),
        );
        let promotion_seconds: Family<StageLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(promotion_buckets);
        registry.register(
            "promotion_duration_seconds",
            "Time from a Promotion's start to its end",
            promotion_seconds.clone(),
        );
        let step_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "step_calls",
            "Calls of promotion steps, by step kind and how they ended",
            step_calls.clone(),
        );
        let step_seconds: Family<StepLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(step_buckets);
        registry.register(
            "step_duration_seconds",
            "Time one call of a step took, by step kind",
            step_seconds.clone(),
        );
        let step_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "step_failures",
            "Failed step calls, by step kind and reason (timed_out, out_of_memory, crashed, ...)",
            step_failures.clone(),
        );
        let verifications = Family::<PhaseLabels, Counter>::default();
        registry.register(
            "verifications",
            "Verifications that ended, by project, Stage and phase",
            verifications.clone(),
        );
        let discoveries = Family::<DiscoveryLabels, Counter>::default();
        registry.register(
            "discovery_requests",
            "Discoveries of a subscription, by type and host",
            discoveries.clone(),
        );
        let discovery_failures = Family::<DiscoveryLabels, Counter>::default();
        registry.register(
            "discovery_failures",
            "Discoveries of a subscription that failed, by type and host",
            discovery_failures.clone(),
        );
        let webhooks = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "webhook_requests",
            "Webhook requests, by receiver type and result",
            webhooks.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "promotions_queued",
            "Promotions waiting for their Stage (phase Pending)",
            queued.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "promotions_running",
            "Promotions running in this process",
            running.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register(
            "store_size_bytes",
            "Size of the data file",
            store_bytes.clone(),
        );
        registry.register(
            "build",
            "The daemon's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                promotions,
                promotion_seconds,
                step_calls,
                step_seconds,
                step_failures,
                verifications,
                discoveries,
                discovery_failures,
                webhooks,
                queued,
                running,
                store_bytes,
            }),
        }
    }

    /// A Promotion of `stage` ended in `phase` after `seconds` (when it is known when it began).
    pub fn promotion_ended(&self, project: &str, stage: &str, phase: &str, seconds: Option<f64>) {
        self.inner
            .promotions
            .get_or_create(&PhaseLabels {
                project: project.into(),
                stage: stage.into(),
                phase: phase.into(),
            })
            .inc();
        if let Some(seconds) = seconds {
            self.inner
                .promotion_seconds
                .get_or_create(&StageLabels {
                    project: project.into(),
                    stage: stage.into(),
                })
                .observe(seconds);
        }
    }

    /// A step of `kind` was called; `failure` says why it failed, if it did.
    pub fn step_called(
        &self,
        kind: &str,
        result: CallResult,
        failure: Option<FailureKind>,
        seconds: f64,
    ) {
        let inner = &self.inner;
        inner
            .step_calls
            .get_or_create(&CallLabels {
                kind: kind.into(),
                result: result.as_str(),
            })
            .inc();
        inner
            .step_seconds
            .get_or_create(&StepLabels { kind: kind.into() })
            .observe(seconds);
        if let Some(failure) = failure {
            inner
                .step_failures
                .get_or_create(&FailureLabels {
                    kind: kind.into(),
                    reason: reason(failure),
                })
                .inc();
        }
    }

    /// A verification of `stage` ended in `phase`.
    pub fn verification_ended(&self, project: &str, stage: &str, phase: &str) {
        self.inner
            .verifications
            .get_or_create(&PhaseLabels {
                project: project.into(),
                stage: stage.into(),
                phase: phase.into(),
            })
            .inc();
    }

    /// A `subscription` (`git`, `image`, `chart`) at `url` was discovered, or failed to be.
    pub fn discovered(&self, subscription: &'static str, url: &str, ok: bool) {
        let labels = DiscoveryLabels {
            subscription,
            host: host_of(url),
        };
        self.inner.discoveries.get_or_create(&labels).inc();
        if !ok {
            self.inner.discovery_failures.get_or_create(&labels).inc();
        }
    }

    /// A webhook request to a receiver of type `receiver` (as the URL says) ended in `result`.
    pub fn webhook(&self, receiver: &str, result: &'static str) {
        let receiver = RECEIVERS
            .iter()
            .find(|r| **r == receiver)
            .copied()
            .unwrap_or("unknown");
        self.inner
            .webhooks
            .get_or_create(&WebhookLabels { receiver, result })
            .inc();
    }

    /// The OpenMetrics text of every metric, with the gauges read now.
    pub fn render(&self, queued: u64, running: u64, store_bytes: u64) -> String {
        let inner = &self.inner;
        inner.queued.set(i64::try_from(queued).unwrap_or(i64::MAX));
        inner
            .running
            .set(i64::try_from(running).unwrap_or(i64::MAX));
        inner
            .store_bytes
            .set(i64::try_from(store_bytes).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &inner.registry);
        text
    }
}

/// A failure's reason as a label value.
fn reason(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::InvalidConfig => "invalid_config",
        FailureKind::Retryable => "retryable",
        FailureKind::Terminal => "terminal",
        FailureKind::Crashed => "crashed",
        FailureKind::TimedOut => "timed_out",
        FailureKind::OutOfMemory => "out_of_memory",
        FailureKind::BadResult => "bad_result",
        FailureKind::UnknownKind => "unknown_kind",
        FailureKind::DiskQuota => "disk_quota",
    }
}

/// The host a subscription's URL names: `https://git.example/x.git` → `git.example`,
/// `ghcr.io/acme/web` → `ghcr.io`, a Docker Hub name (`nginx`, `library/nginx`) → `docker.io`,
/// `git@host:org/repo` → `host`, a local path → `local`. Never a user name or a password.
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    if url.starts_with("file://") || url.starts_with('/') || url.starts_with('.') {
        return "local".into();
    }
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // scp-like `git@host:org/repo`: the part before ':' is the host.
    let host = if !url.contains("://") && url.contains('@') {
        host.split(':').next().unwrap_or_default()
    } else {
        host
    };
    let is_registry = host.contains('.') || host.contains(':') || host == "localhost";
    if !url.contains("://") && !url.contains('@') && !is_registry {
        return "docker.io".into();
    }
    host.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_named_without_credentials() {
        for (url, host) in [
            (
                "https://user:secret@git.example/acme/app.git",
                "git.example",
            ),
            ("http://127.0.0.1:5000/x.git", "127.0.0.1:5000"),
            ("ghcr.io/acme/web", "ghcr.io"),
            ("nginx", "docker.io"),
            ("library/nginx", "docker.io"),
            ("localhost:5000/web", "localhost:5000"),
            ("git@github.example:acme/app.git", "github.example"),
            ("oci://registry.example/charts/app", "registry.example"),
            ("file:///srv/git/app", "local"),
            ("/srv/git/app", "local"),
        ] {
            assert_eq!(host_of(url), host, "{url}");
        }
    }

    #[test]
    fn an_unknown_receiver_type_is_one_series_however_many_are_tried() {
        let metrics = Metrics::new();
        for i in 0..1000 {
            metrics.webhook(&format!("made-up-{i}"), "not_found");
        }
        metrics.webhook("github", "refreshed");
        let text = metrics.render(0, 0, 0);
        assert_eq!(
            text.matches("dray_webhook_requests_total{").count(),
            2,
            "{text}"
        );
        assert!(
            text.contains(
                "dray_webhook_requests_total{receiver=\"unknown\",result=\"not_found\"} 1000"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_text_is_openmetrics_with_the_conventional_names() {
        let metrics = Metrics::new();
        metrics.promotion_ended("shop", "dev", "Succeeded", Some(1.5));
        metrics.step_called(
            "git-clone",
            CallResult::Failed,
            Some(FailureKind::TimedOut),
            0.2,
        );
        let text = metrics.render(3, 1, 4096);
        for line in [
            "# TYPE dray_promotions counter",
            "dray_promotions_total{project=\"shop\",stage=\"dev\",phase=\"Succeeded\"} 1",
            "dray_promotion_duration_seconds_count{project=\"shop\",stage=\"dev\"} 1",
            "dray_step_failures_total{kind=\"git-clone\",reason=\"timed_out\"} 1",
            "dray_step_calls_total{kind=\"git-clone\",result=\"failed\"} 1",
            "dray_promotions_queued 3",
            "dray_store_size_bytes 4096",
            "dray_build_info{version=",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
