//! `hello`: a custom promotion step. It writes a greeting into the promotion's work directory,
//! logs what it did, and returns the greeting as an output for later steps
//! (`${{ outputs.<alias>.greeting }}`).

use dray_sdk::{Step, StepContext, StepError, StepKind, StepResult};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Who to greet.
    name: String,
    /// Where to write the greeting, relative to the work directory.
    #[serde(default = "default_path")]
    path: String,
}

fn default_path() -> String {
    "hello.txt".into()
}

struct Hello;

impl Step for Hello {
    fn describe() -> Vec<StepKind> {
        vec![dray_sdk::kind(
            "hello",
            "Writes a greeting into the work directory",
            json!({
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "description": "Who to greet"},
                    "path": {"type": "string", "description": "Where to write it (default hello.txt)"}
                },
                "additionalProperties": false
            }),
            &[],
        )]
    }

    fn run(_kind: String, context: StepContext, config: String) -> Result<StepResult, StepError> {
        let config: Config = dray_sdk::config(&config)?;
        let freight: Vec<&str> = context.freight.iter().map(|f| f.alias.as_deref().unwrap_or(&f.name)).collect();
        let greeting = format!("Hello, {}! Stage {} of project {} says hi.", config.name, context.stage, context.project);
        if let Some(dir) = std::path::Path::new(&config.path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(dray_sdk::retryable)?;
        }
        std::fs::write(&config.path, format!("{greeting}\n")).map_err(dray_sdk::retryable)?;
        dray_sdk::info!("wrote {} for {}", config.path, config.name);
        if !freight.is_empty() {
            dray_sdk::info!("promoting {}", freight.join(", "));
        }
        println!("printed lines land in the step's log too");
        Ok(dray_sdk::succeeded(json!({ "greeting": greeting, "path": config.path })))
    }
}

dray_sdk::export_step!(Hello);
