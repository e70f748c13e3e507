//! Control steps: `compose-output` (outputs made from its config) and `fail` (stops the
//! promotion with a message), as Kargo's.

use dray_sdk::{Step, StepContext, StepError, StepKind, StepResult};
use serde_json::json;

struct Control;

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
            other => Err(StepError::InvalidConfig(format!(
                "control offers compose-output and fail, not {other:?}"
            ))),
        }
    }
}

dray_sdk::export_step!(Control);
