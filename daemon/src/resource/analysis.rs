//! Argo Rollouts' `AnalysisTemplate` (`argoproj.io/v1alpha1`): the metrics a Stage's
//! verification measures. Dray runs them with its own verifier components, not Argo Rollouts.
//!
//! The `web` and `prometheus` providers are typed because Dray runs them; the other Argo
//! providers are accepted as written so existing templates apply unchanged.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Check, Errors};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplateSpec {
    #[serde(default)]
    pub metrics: Vec<Metric>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Argument>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dry_run: Vec<MetricSelector>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurement_retention: Vec<MeasurementRetention>,
}

/// The spec of an AnalysisRun Dray made for a Stage: the metrics of all its templates, with
/// `{{args.NAME}}` filled in, and the Freight it verifies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRunSpec {
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Arguments with a value, or with a `valueFrom` read at each measurement (never stored).
    #[serde(default)]
    pub args: Vec<Argument>,
    #[serde(default)]
    pub dry_run: Vec<MetricSelector>,
    #[serde(default)]
    pub measurement_retention: Vec<MeasurementRetention>,
    /// The first Freight's name.
    #[serde(default)]
    pub freight: String,
    #[serde(default)]
    pub freight_collection: Vec<super::status::FreightReference>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Argument {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSelector {
    pub metric_name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeasurementRetention {
    pub metric_name: String,
    pub limit: i64,
}

/// Argo's `count`, `failureLimit`, ... are "int or string" (a string may hold an `{{args.x}}`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metric {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_limit: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_error_limit: Option<IntOrString>,
    #[serde(default)]
    pub provider: MetricProvider,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricProvider {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusMetric>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_relic: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wavefront: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kayenta: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_watch: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphite: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influxdb: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skywalking: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebMetric {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<KeyValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusMetric {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<KeyValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Value>,
}

impl Check for AnalysisTemplateSpec {
    fn check(&self, errors: &mut Errors) {
        if self.metrics.is_empty() {
            errors.add("spec.metrics", "needs at least one metric");
        }
        let mut names = std::collections::HashSet::new();
        for (i, m) in self.metrics.iter().enumerate() {
            let at = format!("spec.metrics[{i}]");
            if errors.required(&format!("{at}.name"), &m.name) && !names.insert(&m.name) {
                errors.add(
                    format!("{at}.name"),
                    format!("metric {:?} is defined twice", m.name),
                );
            }
            for (field, value) in [
                ("interval", &m.interval),
                ("initialDelay", &m.initial_delay),
            ] {
                if let Some(d) = value {
                    errors.duration(&format!("{at}.{field}"), d);
                }
            }
            // Checked as written unless `{{args.…}}` fills them in when the verification runs.
            for (field, value) in [
                ("successCondition", &m.success_condition),
                ("failureCondition", &m.failure_condition),
            ] {
                if let Some(code) = value.as_deref().filter(|c| !c.contains("{{")) {
                    errors.condition(&format!("{at}.{field}"), code);
                }
            }
            let p = &m.provider;
            errors.exactly_one(
                &format!("{at}.provider"),
                &[
                    ("web", p.web.is_some()),
                    ("prometheus", p.prometheus.is_some()),
                    ("job", p.job.is_some()),
                    ("datadog", p.datadog.is_some()),
                    ("newRelic", p.new_relic.is_some()),
                    ("wavefront", p.wavefront.is_some()),
                    ("kayenta", p.kayenta.is_some()),
                    ("cloudWatch", p.cloud_watch.is_some()),
                    ("graphite", p.graphite.is_some()),
                    ("influxdb", p.influxdb.is_some()),
                    ("skywalking", p.skywalking.is_some()),
                    ("plugin", p.plugin.is_some()),
                ],
            );
        }
        for (i, d) in self.dry_run.iter().enumerate() {
            if d.metric_name != "*" && !names.contains(&d.metric_name) {
                errors.add(
                    format!("spec.dryRun[{i}].metricName"),
                    format!("no metric is named {:?}", d.metric_name),
                );
            }
        }
    }
}
