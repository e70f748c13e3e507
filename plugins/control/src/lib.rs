//! Control steps, as Kargo's: `compose-output` (outputs made from its config), `fail` (stops
//! the promotion with a message), `set-metadata` (records metadata on a Stage or Freight of
//! the project) and `set-freight-alias` (renames a Freight's alias), the last two through the
//! host's `metadata` interface.

use dray_sdk::metadata::ResourceKind;
use dray_sdk::{Capability, Step, StepContext, StepError, StepKind, StepResult};
use serde_json::json;

/// The plugin's step kinds (or verifiers): exported by `plugins/steps` with the other built-ins.
pub struct Control;

impl Step for Control {
    fn describe() -> Vec<StepKind> {
        vec![
            dray_sdk::kind(
                "compose-output",
                "Makes its config the step's outputs, e.g. to gather values for later steps",
                json!({"type": "object", "description": "Every key becomes an output"}),
                &[],
            ),
            dray_sdk::kind(
                "fail",
                "Fails the promotion with a message",
                json!({
                    "type": "object",
                    "properties": {"message": {"type": "string", "description": "Why the promotion stops"}},
                    "additionalProperties": false
                }),
                &[],
            ),
            dray_sdk::kind(
                "set-metadata",
                "Records key/value metadata on Stages or Freight of the project (their status.metadata)",
                json!({
                    "type": "object", "additionalProperties": false, "required": ["updates"],
                    "properties": {
                        "updates": {
                            "type": "array", "minItems": 1,
                            "items": {
                                "type": "object", "additionalProperties": false, "required": ["kind", "name", "values"],
                                "properties": {
                                    "kind": {"type": "string", "enum": ["Stage", "Freight"], "description": "What to set metadata on"},
                                    "name": {"type": "string", "minLength": 1, "description": "The Stage, or the Freight's name or alias"},
                                    "values": {"type": "object", "minProperties": 1, "description": "Keys to set (any JSON values)"}
                                }
                            }
                        }
                    }
                }),
                &[Capability::Metadata],
            ),
            dray_sdk::kind(
                "set-freight-alias",
                "Gives a Freight of the project a new alias",
                json!({
                    "type": "object", "additionalProperties": false, "required": ["name", "alias"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "description": "The Freight's name or current alias"},
                        "alias": {"type": "string", "minLength": 1, "maxLength": 63, "description": "Its new alias, unused by other Freight of the project"}
                    }
                }),
                &[Capability::Metadata],
            ),
        ]
    }

    fn run(kind: String, _context: StepContext, config: String) -> Result<StepResult, StepError> {
        let config: serde_json::Value = dray_sdk::config(&config)?;
        match kind.as_str() {
            "compose-output" => Ok(dray_sdk::succeeded(config)),
            "fail" => {
                let message = config
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("the fail step was reached");
                Err(dray_sdk::terminal(message))
            }
            "set-metadata" => set_metadata(&config),
            "set-freight-alias" => {
                let name = config["name"].as_str().unwrap_or_default();
                let alias = config["alias"].as_str().unwrap_or_default();
                dray_sdk::metadata::set_freight_alias(name, alias).map_err(StepError::Terminal)?;
                Ok(dray_sdk::succeeded(json!({})))
            }
            other => Err(StepError::InvalidConfig(format!(
                "control offers compose-output, fail, set-metadata and set-freight-alias, not {other:?}"
            ))),
        }
    }
}

fn set_metadata(config: &serde_json::Value) -> Result<StepResult, StepError> {
    let updates = config["updates"].as_array().cloned().unwrap_or_default();
    for (i, update) in updates.iter().enumerate() {
        let kind = match update["kind"].as_str() {
            Some("Stage") => ResourceKind::Stage,
            Some("Freight") => ResourceKind::Freight,
            other => {
                return Err(StepError::InvalidConfig(format!(
                    "updates[{i}].kind: {other:?} is not Stage or Freight"
                )));
            }
        };
        let name = update["name"].as_str().unwrap_or_default();
        dray_sdk::metadata::set(kind, name, &update["values"].to_string())
            .map_err(|e| StepError::Terminal(format!("updates[{i}]: {e}")))?;
    }
    Ok(dray_sdk::succeeded(json!({})))
}
