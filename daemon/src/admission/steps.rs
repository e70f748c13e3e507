//! Apply-time checks of promotion steps, so a mistake fails `dray apply` instead of a Promotion
//! at 3 a.m.: every `uses:` names a step kind the daemon runs (or a plugin reference), every
//! `task:` a PromotionTask in the store or the same apply, and every config fits its step
//! kind's JSON Schema wherever no expression decides the value. (Expressions themselves are
//! checked by the typed gate: they parse and call only functions that exist.)

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Parsed, Problem};
use crate::resource::{self, Kind, PromotionStep, StageSpec};
use crate::store::{Reader, StoreError, WriteTx};

/// One way a config does not fit its step kind's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigProblem {
    /// The JSON pointer of the value it is about.
    pub pointer: String,
    pub message: String,
    /// Whether it is about a choice among schemas (`oneOf`, `anyOf`, `not`), which a value an
    /// expression decides inside it may settle.
    pub about_choice: bool,
}

impl ConfigProblem {
    /// The problem a JSON Schema validator reported.
    pub fn of(e: &jsonschema::ValidationError<'_>) -> ConfigProblem {
        use jsonschema::error::ValidationErrorKind as K;
        ConfigProblem {
            pointer: e.instance_path().to_string(),
            message: missing_choice(e).unwrap_or_else(|| e.to_string()),
            about_choice: matches!(
                e.kind(),
                K::AnyOf { .. }
                    | K::OneOfNotValid { .. }
                    | K::OneOfMultipleValid { .. }
                    | K::Not { .. }
            ),
        }
    }
}

/// For a choice (`anyOf`/`oneOf`) whose alternatives each only miss required fields, what to
/// write: "needs `message` or `messageFromSteps`" rather than the validator's "is not valid
/// under any of the schemas listed".
fn missing_choice(e: &jsonschema::ValidationError<'_>) -> Option<String> {
    use jsonschema::error::ValidationErrorKind as K;
    let context = match e.kind() {
        K::AnyOf { context } | K::OneOfNotValid { context } => context,
        _ => return None,
    };
    let mut alternatives: Vec<String> = Vec::new();
    for errors in context {
        let mut missing = Vec::new();
        for error in errors {
            match error.kind() {
                K::Required { property } => {
                    missing.push(format!("`{}`", property.as_str().unwrap_or_default()))
                }
                _ => return None,
            }
        }
        if missing.is_empty() {
            return None;
        }
        alternatives.push(missing.join(" and "));
    }
    (!alternatives.is_empty()).then(|| format!("needs {}", alternatives.join(" or ")))
}

/// The step kinds a daemon runs, as apply checks them.
pub trait StepKinds: Sync {
    /// Every kind's name, for the message about one that does not exist.
    fn names(&self) -> Vec<String>;
    /// `None`: there is no step kind `kind`. Else the problems of `config` against the kind's
    /// schema.
    fn config_problems(&self, kind: &str, config: &Value) -> Option<Vec<ConfigProblem>>;
}

/// The steps of an object, with the path they are written under.
fn steps_of(object: &crate::resource::Object) -> Option<(&'static str, Vec<PromotionStep>)> {
    match object.kind {
        Kind::Stage => {
            let spec = object.typed::<resource::Manifest<StageSpec>>().ok()?.spec;
            let steps = spec.promotion_template?.spec.steps;
            Some(("spec.promotionTemplate.spec.steps", steps))
        }
        Kind::PromotionTask | Kind::ClusterPromotionTask => {
            let spec = object
                .typed::<resource::Manifest<resource::PromotionTaskSpec>>()
                .ok()?
                .spec;
            Some(("spec.steps", spec.steps))
        }
        _ => None,
    }
}

/// Whether `value` is, or holds, a `${{ }}` expression (so what it becomes is known only when
/// the step runs).
fn has_expression(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("${{") || s.contains("${%"),
        Value::Array(items) => items.iter().any(has_expression),
        Value::Object(map) => map.values().any(has_expression),
        _ => false,
    }
}

/// A schema problem that an expression may explain: the value it is about is an expression,
/// or it is about a choice among schemas and a value inside is decided by one.
fn explained_by_expression(config: &Value, problem: &ConfigProblem) -> bool {
    match config.pointer(&problem.pointer) {
        Some(at @ Value::String(_)) => has_expression(at),
        Some(at) => problem.about_choice && has_expression(at),
        None => false,
    }
}

/// A JSON pointer (`/images/0/tag`) as a field path (`.images[0].tag`).
fn pointer_path(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            out.push('.');
            out.push_str(&part);
        }
    }
    out
}

/// Checks the steps of every Stage and PromotionTask of `batch`.
pub(super) fn check(
    tx: &WriteTx,
    batch: &[Parsed],
    kinds: &dyn StepKinds,
    problems: &mut Vec<Problem>,
) -> Result<(), StoreError> {
    let tasks_in_batch: BTreeSet<(Kind, &str, &str)> = batch
        .iter()
        .filter(|p| {
            matches!(
                p.object.kind,
                Kind::PromotionTask | Kind::ClusterPromotionTask
            )
        })
        .map(|p| (p.object.kind, p.object.project(), p.object.name()))
        .collect();
    for p in batch {
        let Some((path, steps)) = steps_of(&p.object) else {
            continue;
        };
        let project = p.object.project();
        for (i, step) in steps.iter().enumerate() {
            let at = format!("{path}[{i}]");
            if let Some(task) = &step.task {
                let (kind, home) = match task.kind.as_deref().unwrap_or("PromotionTask") {
                    "PromotionTask" => (Kind::PromotionTask, project),
                    "ClusterPromotionTask" => (Kind::ClusterPromotionTask, ""),
                    other => {
                        problems.push(p.problem(
                            format!("{at}.task.kind"),
                            format!("{other:?} is not PromotionTask or ClusterPromotionTask"),
                        ));
                        continue;
                    }
                };
                let found = tasks_in_batch.contains(&(kind, home, task.name.as_str()))
                    || tx.get(kind, home, &task.name)?.is_some();
                if !found {
                    let place = if home.is_empty() {
                        String::new()
                    } else {
                        format!(" in project {project:?}")
                    };
                    problems.push(p.problem(
                        format!("{at}.task.name"),
                        format!(
                            "there is no {kind} {:?}{place}: apply it first, or in the same apply",
                            task.name
                        ),
                    ));
                }
                continue;
            }
            let Some(uses) = step.uses.as_deref() else {
                continue;
            };
            if crate::oci::PluginRef::is_oci(uses) {
                // Resolved (and checked against the daemon's policy) when the step runs: the
                // registry is not asked at apply.
                // `oci://HOST/REPO:TAG#kind` names one kind of a plugin with several.
                let reference = uses.split_once('#').map_or(uses, |(r, _)| r);
                if let Err(e) = crate::oci::PluginRef::parse(reference) {
                    problems.push(p.problem(format!("{at}.uses"), e.to_string()));
                }
                continue;
            }
            let config = step
                .config
                .clone()
                .unwrap_or_else(|| Value::Object(Default::default()));
            match kinds.config_problems(uses, &config) {
                None => problems.push(p.problem(
                    format!("{at}.uses"),
                    format!(
                        "there is no step kind {uses:?}; this daemon runs {} (or a plugin from a registry: oci://HOST/REPO:TAG)",
                        kinds.names().join(", ")
                    ),
                )),
                Some(found) => {
                    for problem in found {
                        if explained_by_expression(&config, &problem) {
                            continue;
                        }
                        problems.push(p.problem(
                            format!("{at}.config{}", pointer_path(&problem.pointer)),
                            format!("does not fit the schema of {uses}: {}", problem.message),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One step kind, `set-image`, whose config needs a string `image` and may have an integer
    /// `replicas`.
    struct OneKind(jsonschema::Validator);

    impl OneKind {
        fn new() -> OneKind {
            let schema = json!({"type": "object", "required": ["image"], "additionalProperties": false,
                "properties": {"image": {"type": "string"}, "replicas": {"type": "integer"}}});
            OneKind(jsonschema::validator_for(&schema).unwrap())
        }
    }

    impl StepKinds for OneKind {
        fn names(&self) -> Vec<String> {
            vec!["set-image".into()]
        }
        fn config_problems(&self, kind: &str, config: &Value) -> Option<Vec<ConfigProblem>> {
            (kind == "set-image").then(|| {
                self.0
                    .iter_errors(config)
                    .map(|e| ConfigProblem::of(&e))
                    .collect()
            })
        }
    }

    const PROJECT: &str =
        "apiVersion: kargo.akuity.io/v1alpha1\nkind: Project\nmetadata: {name: demo}\n---\n";

    fn stage(steps: &str) -> String {
        format!(
            "{PROJECT}apiVersion: kargo.akuity.io/v1alpha1\nkind: Stage\nmetadata: {{name: dev, namespace: demo}}\nspec:\n  requestedFreight:\n  - origin: {{kind: Warehouse, name: w}}\n    sources: {{direct: true}}\n  promotionTemplate:\n    spec:\n      steps:\n{steps}"
        )
    }

    fn apply(text: &str) -> Result<(), Vec<Problem>> {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("db")).unwrap();
        let sources = [super::super::Source {
            name: "pipeline.yaml".into(),
            content: text.to_string(),
        }];
        match super::super::apply(&store, &sources, None, true, Some(&OneKind::new())) {
            Ok(_) => Ok(()),
            Err(super::super::ApplyError::Invalid(problems)) => Err(problems),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn an_unknown_step_kind_is_refused_where_it_is_written() {
        let problems = apply(&stage("      - uses: argocd-updat\n")).unwrap_err();
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!(p.path, "spec.promotionTemplate.spec.steps[0].uses");
        assert_eq!((p.line, p.column), (Some(15), Some(9)));
        assert!(
            p.message
                .contains("no step kind \"argocd-updat\"; this daemon runs set-image"),
            "{}",
            p.message
        );
    }

    #[test]
    fn a_config_against_the_schema_is_refused_unless_an_expression_decides_it() {
        let problems = apply(&stage(
            "      - uses: set-image\n        config: {image: 3, replicas: 2, extra: x}\n",
        ))
        .unwrap_err();
        let mut found: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
        found.sort();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].0, "spec.promotionTemplate.spec.steps[0].config");
        assert!(found[0].1.contains("extra"), "{found:?}");
        assert_eq!(
            found[1].0,
            "spec.promotionTemplate.spec.steps[0].config.image"
        );
        assert!(
            found[1].1.contains("does not fit the schema of set-image"),
            "{found:?}"
        );
        // The same config with its values from expressions: decided when the step runs.
        apply(&stage(
            "      - uses: set-image\n        config: {image: x, replicas: '${{ vars.n }}'}\n",
        ))
        .unwrap();
        let missing = apply(&stage(
            "      - uses: set-image\n        config: {replicas: '${{ vars.n }}'}\n",
        ))
        .unwrap_err();
        assert!(
            missing[0]
                .message
                .contains("\"image\" is a required property"),
            "{}",
            missing[0].message
        );
    }

    #[test]
    fn a_task_must_exist_and_a_plugin_reference_must_parse() {
        let problems = apply(&stage("      - task: {name: render}\n")).unwrap_err();
        assert!(
            problems[0].message.contains("no PromotionTask \"render\""),
            "{}",
            problems[0].message
        );
        let task = "---\napiVersion: kargo.akuity.io/v1alpha1\nkind: PromotionTask\nmetadata: {name: render, namespace: demo}\nspec:\n  steps:\n  - uses: set-image\n    config: {image: web}\n";
        apply(&format!(
            "{}{task}",
            stage("      - task: {name: render}\n")
        ))
        .unwrap();
        let problems = apply(&stage(
            "      - task: {name: render, kind: ClusterPromotionTask}\n",
        ))
        .unwrap_err();
        assert!(
            problems[0]
                .message
                .contains("no ClusterPromotionTask \"render\":"),
            "a project's PromotionTask is not a cluster one: {}",
            problems[0].message
        );
        apply(&stage(
            "      - uses: oci://registry.example/steps/git:1.0.0#git-clone\n",
        ))
        .unwrap();
        let problems = apply(&stage("      - uses: oci://\n")).unwrap_err();
        assert_eq!(
            problems[0].path,
            "spec.promotionTemplate.spec.steps[0].uses"
        );
    }

    #[test]
    fn an_unknown_function_is_refused_by_the_gate() {
        let problems = apply(&stage(
            "      - uses: set-image\n        config: {image: '${{ toYaml(vars.x) }}'}\n",
        ))
        .unwrap_err();
        assert_eq!(
            problems[0].path,
            "spec.promotionTemplate.spec.steps[0].config.image"
        );
        assert!(
            problems[0].message.contains("unknown function toYaml()"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn pointers_read_as_field_paths() {
        assert_eq!(pointer_path("/images/0/tag"), ".images[0].tag");
        assert_eq!(pointer_path("/a~1b/c"), ".a/b.c");
        assert_eq!(pointer_path(""), "");
    }

    #[test]
    fn a_choice_of_required_fields_says_which_are_missing() {
        let schema = json!({"type": "object", "anyOf": [{"required": ["message"]},
            {"required": ["messageFromSteps"]}], "properties": {"pick": {"oneOf": [
            {"required": ["digest"]}, {"required": ["tag", "name"]}]}, "n": {"anyOf": [
            {"type": "string"}, {"type": "integer"}]}}});
        let validator = jsonschema::validator_for(&schema).unwrap();
        let messages: Vec<String> = validator
            .iter_errors(&json!({"path": "./out", "pick": {}, "n": []}))
            .map(|e| ConfigProblem::of(&e).message)
            .collect();
        assert!(
            messages.contains(&"needs `message` or `messageFromSteps`".to_string()),
            "{messages:?}"
        );
        assert!(
            messages.contains(&"needs `digest` or `tag` and `name`".to_string()),
            "{messages:?}"
        );
        // A choice among types keeps the validator's words.
        assert!(messages.iter().any(|m| m.contains("anyOf")), "{messages:?}");
    }

    #[test]
    fn only_problems_an_expression_may_explain_are_forgiven() {
        let config = json!({"replicas": "${{ vars.n }}", "name": 3, "pick": {"tag": "${{ x }}"},
            "list": {"a": "${{ x }}"}});
        let schema = json!({"type": "object", "required": ["path"], "properties": {
            "replicas": {"type": "integer"}, "name": {"type": "string"},
            "pick": {"oneOf": [{"required": ["digest"]}, {"required": ["version"]}]},
            "list": {"type": "array"}}});
        let validator = jsonschema::validator_for(&schema).unwrap();
        let mut found: Vec<(String, bool)> = validator
            .iter_errors(&config)
            .map(|e| {
                let problem = ConfigProblem::of(&e);
                let explained = explained_by_expression(&config, &problem);
                (problem.pointer, explained)
            })
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                // `path` is missing whatever the expressions give.
                ("".to_string(), false),
                // An object where a list goes is wrong whatever the expression inside gives.
                ("/list".to_string(), false),
                ("/name".to_string(), false),
                // The choice may be settled by the expression inside.
                ("/pick".to_string(), true),
                // The expression decides the integer.
                ("/replicas".to_string(), true),
            ]
        );
    }
}
