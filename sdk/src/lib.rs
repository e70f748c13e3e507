//! `dray-sdk`: write Dray promotion steps in Rust, as WebAssembly components.
//!
//! A plugin is a `cdylib` crate built with `cargo build --release --target wasm32-wasip2`. It
//! implements [`Step`] (the `describe` and `run` exports of the WIT world `dray:plugin/step`) and
//! exports it with [`export_step!`]. Inside `run`, the promotion's work directory is the whole
//! file system (`./src`, `/src` and `src` are the same place), the environment is empty, and
//! anything printed goes to the step's log, as do [`info!`], [`warn!`] and friends.
//!
//! A complete plugin:
//!
//! ```
//! use dray_sdk::{Capability, Step, StepContext, StepError, StepKind, StepResult};
//!
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     name: String,
//! }
//!
//! struct Hello;
//!
//! impl Step for Hello {
//!     fn describe() -> Vec<StepKind> {
//!         vec![dray_sdk::kind(
//!             "hello",
//!             "Writes a greeting to hello.txt",
//!             serde_json::json!({
//!                 "type": "object",
//!                 "required": ["name"],
//!                 "properties": {"name": {"type": "string"}},
//!                 "additionalProperties": false
//!             }),
//!             &[],
//!         )]
//!     }
//!
//!     fn run(kind: String, context: StepContext, config: String) -> Result<StepResult, StepError> {
//!         let config: Config = dray_sdk::config(&config)?;
//!         let greeting = format!("hello, {} from stage {}", config.name, context.stage);
//!         std::fs::write("hello.txt", &greeting).map_err(dray_sdk::retryable)?;
//!         dray_sdk::info!("wrote hello.txt for {kind}");
//!         Ok(dray_sdk::succeeded(serde_json::json!({ "greeting": greeting })))
//!     }
//! }
//!
//! dray_sdk::export_step!(Hello);
//! # fn main() {}
//! ```
//!
//! A verifier (a component that takes measurements for a Stage's verification) implements
//! [`Verifier`] instead and exports it with [`export_verifier!`]; its `verify` returns one
//! [`verifier::Measurement`] whose value the host judges with the metric's conditions. The
//! built-in `web` and `prometheus` verifiers (`plugins/metrics`) are written that way.

#[cfg(feature = "expr")]
pub mod expr;
#[cfg(feature = "http")]
pub mod http;
pub mod path;
#[cfg(feature = "yaml")]
pub mod yaml;

/// The bindings generated from `wit/plugin.wit` (world `full-step`). Components import only the
/// host interfaces they call, so a step that never calls `git` needs no `git` grant.
#[allow(clippy::too_many_arguments)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "full-step",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_step",
        default_bindings_module: "dray_sdk::bindings",
        generate_all,
    });
}

/// The bindings of the WIT world `verifier`: a component that takes measurements after a
/// promotion (`describe` and `verify`). It shares the types and the `log` interface of the step
/// bindings, so the helpers above work in both.
#[allow(clippy::too_many_arguments)]
pub mod verifier {
    wit_bindgen::generate!({
        world: "verifier",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_verifier",
        default_bindings_module: "dray_sdk::verifier",
        with: {
            "dray:plugin/types@0.1.0": crate::bindings::dray::plugin::types,
            "dray:plugin/log@0.1.0": crate::bindings::dray::plugin::log,
        },
    });
    pub use crate::bindings::dray::plugin::types::MeasurementPhase;
}

pub use bindings::Guest as Step;
pub use bindings::dray::plugin::credentials;
pub use bindings::dray::plugin::git;
pub use bindings::dray::plugin::helm;
pub use bindings::dray::plugin::kube;
pub use bindings::dray::plugin::log::{self, Level};
pub use bindings::dray::plugin::metadata;
pub use bindings::dray::plugin::oci;
pub use bindings::dray::plugin::types::{
    Capability, Chart, Commit, Freight, Image, Status, StepContext, StepError, StepKind, StepResult,
};
pub use bindings::export_step;
pub use verifier::Guest as Verifier;
pub use verifier::export_verifier;

/// Reads the step's config (JSON) into `T`; a mismatch is an `invalid-config` error that names
/// the field.
pub fn config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, StepError> {
    serde_json::from_str(config).map_err(|e| StepError::InvalidConfig(format!("config: {e}")))
}

/// The step's variables (Stage, template and step `vars`) as a JSON object.
pub fn vars(context: &StepContext) -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(&context.vars).unwrap_or_default()
}

/// Describes one step kind.
pub fn kind(
    name: &str,
    description: &str,
    config_schema: serde_json::Value,
    capabilities: &[Capability],
) -> StepKind {
    StepKind {
        name: name.into(),
        description: description.into(),
        config_schema: config_schema.to_string(),
        capabilities: capabilities.to_vec(),
    }
}

/// A finished step with `outputs` (a JSON object; anything else becomes `{"value": ...}`).
pub fn succeeded(outputs: serde_json::Value) -> StepResult {
    StepResult {
        status: Status::Succeeded,
        outputs: object(outputs),
        message: None,
        retry_after_seconds: None,
    }
}

/// A step that is not done: the host asks again after `retry_after_seconds`.
pub fn running(retry_after_seconds: u32, message: impl Into<String>) -> StepResult {
    StepResult {
        status: Status::Running,
        outputs: "{}".into(),
        message: Some(message.into()),
        retry_after_seconds: Some(retry_after_seconds),
    }
}

fn object(value: serde_json::Value) -> String {
    match value {
        serde_json::Value::Object(_) => value.to_string(),
        serde_json::Value::Null => "{}".into(),
        other => serde_json::json!({ "value": other }).to_string(),
    }
}

/// A Go duration (`10s`, `1m30s`, `500ms`), as Kargo's configs write them.
pub fn duration(text: &str, field: &str) -> Result<std::time::Duration, StepError> {
    let bad = || {
        StepError::InvalidConfig(format!(
            "{field}: {text:?} is not a duration like 30s, 1m30s or 500ms"
        ))
    };
    let mut total = std::time::Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += std::time::Duration::from_secs_f64(number * seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A transient failure (counts against the step's retry threshold).
pub fn retryable(error: impl std::fmt::Display) -> StepError {
    StepError::Retryable(error.to_string())
}

/// A failure that retrying will not fix.
pub fn terminal(error: impl std::fmt::Display) -> StepError {
    StepError::Terminal(error.to_string())
}

/// Writes one line to the step's log at `level`, with `key=value` fields.
pub fn log_line(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    log::write(level, message, &fields);
}

/// `info!("cloned {url}")`: a line in the step's log.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log_line($crate::Level::Info, &format!($($arg)*), &[]) };
}

/// `warn!(...)`: a warning in the step's log.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log_line($crate::Level::Warn, &format!($($arg)*), &[]) };
}

/// `error!(...)`: an error line in the step's log (the step still decides whether it failed).
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log_line($crate::Level::Error, &format!($($arg)*), &[]) };
}

/// `debug!(...)`: a debug line in the step's log.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log_line($crate::Level::Debug, &format!($($arg)*), &[]) };
}
