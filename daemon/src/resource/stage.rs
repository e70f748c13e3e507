//! `Stage`, `Promotion` and `PromotionTask`: where Freight goes, and the steps that take it there.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Check, Errors, NamedValue, check_vars};

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<NamedValue>,
    #[serde(default)]
    pub requested_freight: Vec<FreightRequest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_template: Option<PromotionTemplate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Kargo's Targets (in development there; carried by Kargo OSS, executed only by its
    /// Enterprise edition): accepted and kept, not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<StageTargets>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StageTargets {
    #[serde(default)]
    pub selectors: Vec<super::LabelSelector>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FreightRequest {
    pub origin: FreightOrigin,
    #[serde(default)]
    pub sources: FreightSources,
}

/// Where Freight comes from; only `Warehouse` origins exist.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FreightOrigin {
    #[serde(default = "warehouse_kind")]
    pub kind: String,
    pub name: String,
}

impl Default for FreightOrigin {
    fn default() -> Self {
        FreightOrigin {
            kind: warehouse_kind(),
            name: String::new(),
        }
    }
}

fn warehouse_kind() -> String {
    "Warehouse".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FreightSources {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub direct: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_soak_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promotion_options: Option<AutoPromotionOptions>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoPromotionOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection_policy: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromotionTemplate {
    #[serde(default)]
    pub spec: PromotionTemplateSpec,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromotionTemplateSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<NamedValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<PromotionStep>,
}

/// One step: `uses` a step kind, or inflates a `task`; `config` is checked against the step's
/// own JSON Schema when the step runs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromotionStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskReference>,
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub as_: Option<String>,
    #[serde(default, rename = "if", skip_serializing_if = "Option::is_none")]
    pub if_: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continue_on_error: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<StepRetry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<NamedValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepRetry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_threshold: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verification {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis_templates: Vec<AnalysisTemplateReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_run_metadata: Option<AnalysisRunMetadata>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<NamedValue>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisTemplateReference {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnalysisRunMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A Promotion: one Freight into one Stage, with the steps inflated from the Stage's template.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromotionSpec {
    #[serde(default)]
    pub stage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freight: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<FreightOrigin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<NamedValue>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<PromotionStep>,
}

/// A reusable list of steps; a var without a value must be supplied by whoever uses the task.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromotionTaskSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<NamedValue>,
    #[serde(default)]
    pub steps: Vec<PromotionStep>,
}

fn check_steps(path: &str, steps: &[PromotionStep], allow_tasks: bool, errors: &mut Errors) {
    let mut aliases = HashSet::new();
    for (i, step) in steps.iter().enumerate() {
        let at = format!("{path}[{i}]");
        errors.exactly_one(
            &at,
            &[("uses", step.uses.is_some()), ("task", step.task.is_some())],
        );
        if let Some(uses) = &step.uses
            && uses.trim().is_empty()
        {
            errors.add(
                format!("{at}.uses"),
                "must name a step kind, e.g. git-clone",
            );
        }
        if let Some(task) = &step.task {
            if !allow_tasks {
                errors.add(
                    format!("{at}.task"),
                    "a task's steps may not use other tasks",
                );
            }
            errors.subdomain(&format!("{at}.task.name"), &task.name);
            if let Some(kind) = &task.kind
                && kind != "PromotionTask"
                && kind != "ClusterPromotionTask"
            {
                errors.add(
                    format!("{at}.task.kind"),
                    "must be PromotionTask or ClusterPromotionTask",
                );
            }
            if step.continue_on_error {
                errors.add(
                    format!("{at}.continueOnError"),
                    "may not be set on a task step",
                );
            }
            if step.retry.is_some() {
                errors.add(format!("{at}.retry"), "may not be set on a task step");
            }
        }
        if let Some(alias) = &step.as_ {
            if alias.is_empty() || alias.contains("::") {
                errors.add(format!("{at}.as"), format!("{alias:?} is not a step alias"));
            } else if !aliases.insert(alias.clone()) {
                errors.add(
                    format!("{at}.as"),
                    format!("step alias {alias:?} is used twice"),
                );
            }
        }
        if let Some(timeout) = step.retry.as_ref().and_then(|r| r.timeout.as_ref()) {
            errors.duration(&format!("{at}.retry.timeout"), timeout);
        }
        if let Some(config) = &step.config {
            if config.is_object() {
                errors.expressions_in(&format!("{at}.config"), config);
            } else {
                errors.add(
                    format!("{at}.config"),
                    "must be a mapping of the step's settings",
                );
            }
        }
        if let Some(condition) = &step.if_ {
            errors.condition(&format!("{at}.if"), condition);
        }
        check_vars(&format!("{at}.vars"), &step.vars, errors);
    }
}

impl Check for StageSpec {
    fn check(&self, errors: &mut Errors) {
        check_vars("spec.vars", &self.vars, errors);
        if let Some(targets) = &self.targets {
            for (i, selector) in targets.selectors.iter().enumerate() {
                selector.check(&format!("spec.targets.selectors[{i}]"), errors);
            }
        }
        if self.requested_freight.is_empty() {
            errors.add(
                "spec.requestedFreight",
                "needs at least one entry: which Warehouse's Freight this Stage takes",
            );
        }
        let mut origins = HashSet::new();
        for (i, request) in self.requested_freight.iter().enumerate() {
            let at = format!("spec.requestedFreight[{i}]");
            if request.origin.kind != "Warehouse" {
                errors.add(format!("{at}.origin.kind"), "must be Warehouse");
            }
            errors.subdomain(&format!("{at}.origin.name"), &request.origin.name);
            if !origins.insert(&request.origin) {
                errors.add(
                    format!("{at}.origin"),
                    format!("Warehouse {:?} is requested twice", request.origin.name),
                );
            }
            let s = &request.sources;
            if !s.direct && s.stages.is_empty() {
                errors.add(
                    format!("{at}.sources"),
                    "set direct: true, or list upstream stages, or both",
                );
            }
            for (j, stage) in s.stages.iter().enumerate() {
                errors.subdomain(&format!("{at}.sources.stages[{j}]"), stage);
            }
            if let Some(soak) = &s.required_soak_time {
                errors.duration(&format!("{at}.sources.requiredSoakTime"), soak);
            }
            if let Some(strategy) = &s.availability_strategy
                && !matches!(strategy.as_str(), "" | "All" | "OneOf")
            {
                errors.add(
                    format!("{at}.sources.availabilityStrategy"),
                    "must be All or OneOf",
                );
            }
            if let Some(policy) = s
                .auto_promotion_options
                .as_ref()
                .and_then(|o| o.selection_policy.as_ref())
            {
                let p = format!("{at}.sources.autoPromotionOptions.selectionPolicy");
                match policy.as_str() {
                    "NewestFreight" => {}
                    "MatchUpstream" if s.stages.len() == 1 => {}
                    "MatchUpstream" => {
                        errors.add(p, "MatchUpstream needs exactly one upstream stage")
                    }
                    _ => errors.add(p, "must be NewestFreight or MatchUpstream"),
                }
            }
        }
        if let Some(template) = &self.promotion_template {
            check_vars(
                "spec.promotionTemplate.spec.vars",
                &template.spec.vars,
                errors,
            );
            check_steps(
                "spec.promotionTemplate.spec.steps",
                &template.spec.steps,
                true,
                errors,
            );
        }
        if let Some(v) = &self.verification {
            for (i, t) in v.analysis_templates.iter().enumerate() {
                errors.subdomain(
                    &format!("spec.verification.analysisTemplates[{i}].name"),
                    &t.name,
                );
                if let Some(kind) = &t.kind
                    && kind != "AnalysisTemplate"
                    && kind != "ClusterAnalysisTemplate"
                {
                    errors.add(
                        format!("spec.verification.analysisTemplates[{i}].kind"),
                        "must be AnalysisTemplate or ClusterAnalysisTemplate",
                    );
                }
            }
            for (i, arg) in v.args.iter().enumerate() {
                if let Some(value) = &arg.value {
                    errors.expressions(&format!("spec.verification.args[{i}].value"), value);
                }
            }
        }
    }
}

impl Check for PromotionSpec {
    fn check(&self, errors: &mut Errors) {
        errors.subdomain("spec.stage", &self.stage);
        errors.exactly_one(
            "spec",
            &[
                ("freight", self.freight.is_some()),
                ("origin", self.origin.is_some()),
            ],
        );
        check_vars("spec.vars", &self.vars, errors);
        check_steps("spec.steps", &self.steps, false, errors);
    }
}

impl Check for PromotionTaskSpec {
    fn check(&self, errors: &mut Errors) {
        check_vars("spec.vars", &self.vars, errors);
        if self.steps.is_empty() {
            errors.add("spec.steps", "needs at least one step");
        }
        check_steps("spec.steps", &self.steps, false, errors);
    }
}

impl StageSpec {
    /// The upstream Stages this Stage takes Freight from, over all its requests.
    pub fn upstream(&self) -> BTreeSet<&str> {
        self.requested_freight
            .iter()
            .flat_map(|r| r.sources.stages.iter().map(String::as_str))
            .collect()
    }
}

/// Finds a cycle in the Stage graph (`stage -> upstream stages`), returned as the Stages along it
/// with the first repeated at the end (`a -> b -> a`), or `None` if the graph is a DAG.
pub fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Visiting) => {
                let start = path.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Visiting);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, marks, path) {
                return Some(cycle);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(cycle);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(n, ups)| (n.to_string(), ups.iter().map(|u| u.to_string()).collect()))
            .collect()
    }

    #[test]
    fn a_pipeline_is_not_a_cycle() {
        let g = graph(&[
            ("test", &[]),
            ("uat", &["test"]),
            ("prod", &["uat", "test"]),
        ]);
        assert_eq!(find_cycle(&g), None);
    }

    #[test]
    fn names_every_stage_of_a_cycle() {
        let g = graph(&[("test", &["prod"]), ("uat", &["test"]), ("prod", &["uat"])]);
        let cycle = find_cycle(&g).expect("a cycle");
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
        for stage in ["test", "uat", "prod"] {
            assert!(cycle.iter().any(|s| s == stage));
        }
    }

    #[test]
    fn a_stage_that_feeds_itself_is_a_cycle() {
        assert_eq!(
            find_cycle(&graph(&[("a", &["a"])])),
            Some(vec!["a".to_string(), "a".to_string()])
        );
    }
}
