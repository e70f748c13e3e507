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

/// Freight a Stage takes: from one Warehouse (`origin`, as in Kargo), or from every Warehouse
/// of the project whose labels match `originSelector` (a Dray extension; `{}` matches them all),
/// so a Stage of a hundred services needs no hundred entries and a new Warehouse with the label
/// feeds it with no edit. Code reads a Stage's requests after [`StageSpec::resolve`], which
/// turns each selector into the requests of the Warehouses it matches.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FreightRequest {
    #[serde(default, skip_serializing_if = "FreightOrigin::is_unset")]
    pub origin: FreightOrigin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_selector: Option<super::LabelSelector>,
    #[serde(default)]
    pub sources: FreightSources,
}

/// A Warehouse as an origin selector sees it: its name and labels.
pub struct Labelled<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
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

impl FreightOrigin {
    /// No origin named (a request by `originSelector`).
    pub fn is_unset(&self) -> bool {
        self.name.is_empty()
    }
}

impl StageSpec {
    /// Turns every `originSelector` request into one request per Warehouse of `warehouses` it
    /// matches (by name order, with the selector's sources); a Warehouse the Stage names itself
    /// keeps its own entry. A selector that matches nothing adds nothing.
    pub fn resolve<'a>(&mut self, warehouses: impl IntoIterator<Item = Labelled<'a>> + Clone) {
        if self
            .requested_freight
            .iter()
            .all(|r| r.origin_selector.is_none())
        {
            return;
        }
        let named: HashSet<String> = self
            .requested_freight
            .iter()
            .filter(|r| r.origin_selector.is_none())
            .map(|r| r.origin.name.clone())
            .collect();
        let mut taken = named.clone();
        let mut resolved = Vec::new();
        for request in std::mem::take(&mut self.requested_freight) {
            let Some(selector) = &request.origin_selector else {
                resolved.push(request);
                continue;
            };
            let mut matched: Vec<&str> = warehouses
                .clone()
                .into_iter()
                .filter(|w| selector.matches(w.labels))
                .map(|w| w.name)
                .collect();
            matched.sort_unstable();
            for name in matched {
                if taken.insert(name.to_string()) {
                    resolved.push(FreightRequest {
                        origin: FreightOrigin {
                            kind: warehouse_kind(),
                            name: name.to_string(),
                        },
                        origin_selector: None,
                        sources: request.sources.clone(),
                    });
                }
            }
        }
        self.requested_freight = resolved;
    }

    /// Whether some request is by `originSelector`.
    pub fn selects_origins(&self) -> bool {
        self.requested_freight
            .iter()
            .any(|r| r.origin_selector.is_some())
    }
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
    /// Runs the step once per item of a list (a Dray extension): a YAML list, or an expression
    /// that gives one (`${{ ctx.freight }}`). Each run sees `item` and `index`; the step's
    /// outputs are the list of every run's outputs. On a task step, each of the task's steps
    /// loops over the items in turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<Value>,
}

/// The most items a step's `forEach` may give.
pub const MAX_LOOP_ITEMS: usize = 1000;

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
    /// More Freight promoted with `freight` in the same run, one per origin (a Dray extension:
    /// `dray promote --all-newest`, and auto-promotion's `batchWindow`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<String>,
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
        match &step.for_each {
            None => {}
            Some(Value::Array(items)) if items.len() > MAX_LOOP_ITEMS => errors.add(
                format!("{at}.forEach"),
                format!("lists at most {MAX_LOOP_ITEMS} items"),
            ),
            Some(Value::Array(_)) => {}
            Some(Value::String(code)) if code.contains("${{") => {
                errors.expressions_in(&format!("{at}.forEach"), &Value::String(code.clone()))
            }
            Some(_) => errors.add(
                format!("{at}.forEach"),
                "must be a list, or an expression that gives one (${{ ctx.freight }})",
            ),
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
            if let Some(selector) = &request.origin_selector {
                if !request.origin.is_unset() {
                    errors.add(
                        format!("{at}.originSelector"),
                        "set origin or originSelector, not both",
                    );
                }
                selector.check(&format!("{at}.originSelector"), errors);
            } else if request.origin.is_unset() {
                errors.add(
                    format!("{at}.origin"),
                    "name a Warehouse (origin: {kind: Warehouse, name: …}), or select Warehouses by label with originSelector",
                );
            } else {
                if request.origin.kind != "Warehouse" {
                    errors.add(format!("{at}.origin.kind"), "must be Warehouse");
                }
                errors.subdomain(&format!("{at}.origin.name"), &request.origin.name);
            }
            if request.origin_selector.is_none() && !origins.insert(&request.origin) {
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

    fn spec(yaml: &str) -> StageSpec {
        serde_json::from_value(yaml_value(yaml)).expect("a Stage spec")
    }

    /// YAML to JSON through the daemon's own manifest reader.
    fn yaml_value(yaml: &str) -> Value {
        crate::manifest::parse(yaml).expect("YAML")[0].value.clone()
    }

    #[test]
    fn an_origin_selector_becomes_one_request_per_matching_warehouse() {
        let mut s = spec(
            "requestedFreight:\n\
             - originSelector: {matchLabels: {team: shop}}\n  sources: {stages: [dev], requiredSoakTime: 1h}\n\
             - origin: {kind: Warehouse, name: cart}\n  sources: {direct: true}\n",
        );
        let (shop, bank): (BTreeMap<_, _>, BTreeMap<_, _>) = (
            [("team".to_string(), "shop".to_string())].into(),
            [("team".to_string(), "bank".to_string())].into(),
        );
        let warehouses = [
            ("web", &shop),
            ("cart", &shop),
            ("api", &shop),
            ("ledger", &bank),
        ];
        let mut errors = Errors::default();
        s.check(&mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        s.resolve(
            warehouses
                .iter()
                .map(|(name, labels)| Labelled { name, labels }),
        );
        let got: Vec<(&str, bool)> = s
            .requested_freight
            .iter()
            .map(|r| (r.origin.name.as_str(), r.sources.direct))
            .collect();
        // Name order; `cart` keeps its own entry (direct), the ledger is the bank's.
        assert_eq!(got, [("api", false), ("web", false), ("cart", true)]);
        assert_eq!(
            s.requested_freight[0].sources.required_soak_time.as_deref(),
            Some("1h")
        );
        assert!(!s.selects_origins());
    }

    #[test]
    fn a_request_names_a_warehouse_or_selects_them_not_both_nor_neither() {
        for (yaml, path, says) in [
            (
                "requestedFreight:\n- origin: {kind: Warehouse, name: web}\n  originSelector: {}\n  sources: {direct: true}\n",
                "spec.requestedFreight[0].originSelector",
                "not both",
            ),
            (
                "requestedFreight:\n- sources: {direct: true}\n",
                "spec.requestedFreight[0].origin",
                "originSelector",
            ),
            (
                "requestedFreight:\n- originSelector: {matchExpressions: [{key: team, operator: Near}]}\n  sources: {direct: true}\n",
                "spec.requestedFreight[0].originSelector.matchExpressions[0].operator",
                "not an operator",
            ),
        ] {
            let mut errors = Errors::default();
            spec(yaml).check(&mut errors);
            let found = format!("{errors:?}");
            assert!(found.contains(path) && found.contains(says), "{found}");
        }
    }

    #[test]
    fn for_each_is_a_list_or_an_expression_that_gives_one() {
        let step = |for_each: &str| -> Errors {
            let yaml = format!("- uses: compose-output\n  forEach: {for_each}\n");
            let steps: Vec<PromotionStep> =
                serde_json::from_value(yaml_value(&yaml)).expect("steps");
            let mut errors = Errors::default();
            check_steps("steps", &steps, true, &mut errors);
            errors
        };
        assert!(step("[a, b]").is_empty());
        assert!(step("\"${{ ctx.freight }}\"").is_empty());
        for bad in ["services", "{a: 1}", "\"${{ ctx.freight \""] {
            let found = format!("{:?}", step(bad));
            assert!(found.contains("steps[0].forEach"), "{bad}: {found}");
        }
        let many = format!("[{}]", vec!["x"; MAX_LOOP_ITEMS + 1].join(", "));
        assert!(format!("{:?}", step(&many)).contains("at most 1000"));
    }

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
