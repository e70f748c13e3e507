//! The CustomResourceDefinitions of the kinds Dray keeps in a Kubernetes cluster, compatible
//! with Kargo's and Argo Rollouts' own: the same groups (`kargo.akuity.io`, `argoproj.io`),
//! version (`v1alpha1`), kinds, plurals, scopes, short names and printer columns, each with a
//! status subresource. `dray crds` prints them; `examples/kubernetes/crds.yaml` is that output.
//!
//! Their schemas keep every field (`x-kubernetes-preserve-unknown-fields`) rather than spell
//! out Kargo's: Dray's admission checks every document before it is written, and a schema that
//! pruned what it does not name would drop Dray's own status fields (`selectedOrigins`,
//! `healthChecks`, …). A cluster that has Kargo's CRDs (which prune) keeps Kargo's fields; see
//! `docs/ARCHITECTURE.md`, "On Kubernetes".

use serde_json::{Value, json};

use crate::resource::Kind;

/// A printer column: its name, JSON path and type (`string`, `date`).
type Column = (&'static str, &'static str, &'static str);

const AGE: Column = ("Age", ".metadata.creationTimestamp", "date");

/// What a kind's definition needs beyond what [`Kind`] says.
struct Definition {
    kind: Kind,
    group: &'static str,
    plural: &'static str,
    short_names: &'static [&'static str],
    columns: &'static [Column],
}

const KARGO: &str = "kargo.akuity.io";
const ROLLOUTS: &str = "argoproj.io";

const DEFINITIONS: &[Definition] = &[
    Definition {
        kind: Kind::Project,
        group: KARGO,
        plural: "projects",
        short_names: &[],
        columns: &[AGE],
    },
    Definition {
        kind: Kind::ProjectConfig,
        group: KARGO,
        plural: "projectconfigs",
        short_names: &[],
        columns: &[AGE],
    },
    Definition {
        kind: Kind::ClusterConfig,
        group: KARGO,
        plural: "clusterconfigs",
        short_names: &["clusterconfig", "clusterconfigs"],
        columns: &[AGE],
    },
    Definition {
        kind: Kind::Warehouse,
        group: KARGO,
        plural: "warehouses",
        short_names: &[],
        columns: &[("Shard", ".spec.shard", "string"), AGE],
    },
    Definition {
        kind: Kind::Stage,
        group: KARGO,
        plural: "stages",
        short_names: &[],
        columns: &[
            ("Shard", ".spec.shard", "string"),
            ("Health", ".status.health.status", "string"),
            AGE,
        ],
    },
    Definition {
        kind: Kind::Freight,
        group: KARGO,
        plural: "freights",
        short_names: &[],
        columns: &[
            ("Alias", ".alias", "string"),
            ("Origin (Kind)", ".origin.kind", "string"),
            ("Origin (Name)", ".origin.name", "string"),
            AGE,
        ],
    },
    Definition {
        kind: Kind::Promotion,
        group: KARGO,
        plural: "promotions",
        short_names: &["promo", "promos"],
        columns: &[
            (
                "Shard",
                ".metadata.labels.kargo\\.akuity\\.io/shard",
                "string",
            ),
            ("Stage", ".spec.stage", "string"),
            ("Freight", ".spec.freight", "string"),
            ("Phase", ".status.phase", "string"),
            AGE,
        ],
    },
    Definition {
        kind: Kind::PromotionTask,
        group: KARGO,
        plural: "promotiontasks",
        short_names: &["promotask", "promotasks"],
        columns: &[AGE],
    },
    Definition {
        kind: Kind::ClusterPromotionTask,
        group: KARGO,
        plural: "clusterpromotiontasks",
        short_names: &["clusterpromotask", "clusterpromotasks"],
        columns: &[AGE],
    },
    Definition {
        kind: Kind::AnalysisTemplate,
        group: ROLLOUTS,
        plural: "analysistemplates",
        short_names: &[],
        columns: &[AGE],
    },
    Definition {
        kind: Kind::ClusterAnalysisTemplate,
        group: ROLLOUTS,
        plural: "clusteranalysistemplates",
        short_names: &[],
        columns: &[AGE],
    },
    Definition {
        kind: Kind::AnalysisRun,
        group: ROLLOUTS,
        plural: "analysisruns",
        short_names: &[],
        columns: &[("Status", ".status.phase", "string"), AGE],
    },
];

/// Where a kind lives in a cluster: its group, version and plural (`kargo.akuity.io`,
/// `v1alpha1`, `stages`); `None` for the core kinds (Secrets, ConfigMaps, Events).
pub fn resource_of(kind: Kind) -> Option<(&'static str, &'static str, &'static str)> {
    DEFINITIONS
        .iter()
        .find(|d| d.kind == kind)
        .map(|d| (d.group, "v1alpha1", d.plural))
}

/// Every definition, in the order they install.
pub fn definitions() -> Vec<Value> {
    DEFINITIONS.iter().map(definition).collect()
}

fn definition(d: &Definition) -> Value {
    let kind = d.kind.as_str();
    let columns: Vec<Value> = d
        .columns
        .iter()
        .map(|(name, path, kind)| json!({"name": name, "jsonPath": path, "type": kind}))
        .collect();
    let mut names = json!({
        "kind": kind,
        "listKind": format!("{kind}List"),
        "plural": d.plural,
        "singular": kind.to_ascii_lowercase(),
    });
    if !d.short_names.is_empty() {
        names["shortNames"] = json!(d.short_names);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{}", d.plural, d.group),
            "labels": {"app.kubernetes.io/part-of": "dray"},
        },
        "spec": {
            "group": d.group,
            "names": names,
            "scope": if d.kind.namespaced() { "Namespaced" } else { "Cluster" },
            "versions": [{
                "name": "v1alpha1",
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": format!("{kind}: see Kargo's reference for its fields; Dray checks each document when it is applied."),
                    "x-kubernetes-preserve-unknown-fields": true,
                }},
            }],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_but_the_core_ones_has_a_definition() {
        for kind in Kind::ALL {
            let core = matches!(kind, Kind::Secret | Kind::ConfigMap | Kind::Event);
            assert_eq!(resource_of(kind).is_none(), core, "{kind}");
            if let Some((group, _, plural)) = resource_of(kind) {
                let api_version = format!("{group}/v1alpha1");
                assert!(
                    kind.api_versions().contains(&api_version.as_str()),
                    "{kind}: {api_version}"
                );
                assert!(!plural.is_empty());
            }
        }
        let names: Vec<String> = definitions()
            .iter()
            .map(|d| {
                d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        assert!(names.contains(&"freights.kargo.akuity.io".to_string()));
        assert!(names.contains(&"analysisruns.argoproj.io".to_string()));
    }
}
