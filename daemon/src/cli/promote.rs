//! `dray promote` (create, wait, abort) and `dray logs promotion`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::Value;

use super::client::{CliError, Client, exit};
use crate::engine::logs::Entry;
use crate::resource::status::{PromotionPhase, PromotionStatus, StepExecution, StepStatus};

/// The typed status of a resource the API answered with.
pub(super) fn status_of<T: serde::de::DeserializeOwned + Default>(
    object: &Value,
    what: &str,
) -> Result<T, CliError> {
    match object.get("status") {
        None | Some(Value::Null) => Ok(T::default()),
        Some(s) => T::deserialize(s).map_err(|e| {
            CliError::new(
                exit::FAILED,
                format!("the daemon answered with an unreadable {what} status: {e}"),
            )
        }),
    }
}

/// A name as one URL path segment.
pub(super) fn segment(s: &str) -> String {
    s.replace('/', "%2F")
}

/// Creates a Promotion; with `wait`, follows it to its end and fails if it did not succeed.
pub async fn promote(
    client: &Client,
    project: &str,
    stage: &str,
    what: serde_json::Value,
    wait: bool,
) -> Result<(), CliError> {
    let created = client
        .send(
            Method::POST,
            &format!(
                "/v1/projects/{}/stages/{}/promote",
                segment(project),
                segment(stage)
            ),
            Some(what),
        )
        .await?;
    let name = created["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let status: PromotionStatus = status_of(&created, "Promotion")?;
    let alias = status
        .freight
        .as_ref()
        .map(|f| f.shown().to_string())
        .unwrap_or_default();
    let more = created["spec"]["batch"].as_array().map_or(0, Vec::len);
    if more == 0 {
        println!("promotion {name} created: Freight {alias} into Stage {stage}");
    } else {
        println!(
            "promotion {name} created: Freight {alias} and {more} more (one per origin) into Stage {stage}"
        );
    }
    if !wait {
        return Ok(());
    }
    follow(client, project, &name).await
}

fn step_line(meta: &StepExecution, uses: &str) -> String {
    let mark = match meta.status {
        Some(StepStatus::Succeeded) => "✓",
        Some(StepStatus::Skipped) => "-",
        Some(StepStatus::Running) => "…",
        _ => "✗",
    };
    let status = meta.status.map_or("Pending", StepStatus::as_str);
    let alias = &meta.alias;
    let time = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
    };
    let took = match (time(&meta.started_at), time(&meta.finished_at)) {
        (Some(a), Some(b)) => b
            .duration_since(a)
            .map(|d| format!(" in {} ms", d.as_millis()))
            .unwrap_or_default(),
        _ => String::new(),
    };
    let message = meta
        .message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default();
    format!(
        "{mark} {alias:<24} {uses:<22} {}{took}{message}",
        status.to_lowercase()
    )
}

/// Polls a Promotion and prints each step as it ends; exits non-zero unless it succeeded.
pub async fn follow(client: &Client, project: &str, name: &str) -> Result<(), CliError> {
    let terminal = std::io::stdout().is_terminal();
    let path = format!(
        "/v1/projects/{}/promotions/{}",
        segment(project),
        segment(name)
    );
    let spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    let mut printed = 0usize;
    let mut tick = 0usize;
    loop {
        let promotion = client.send(Method::GET, &path, None).await?;
        let status: PromotionStatus = status_of(&promotion, "Promotion")?;
        let steps = promotion["spec"]["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let metas = &status.step_execution_metadata;
        let phase = status.phase();
        let ended = phase.is_terminal();
        for (i, meta) in metas.iter().enumerate().skip(printed) {
            let done = meta.finished_at.is_some() && meta.status != Some(StepStatus::Running);
            if !done {
                break;
            }
            let uses = steps.get(i).and_then(|s| s["uses"].as_str()).unwrap_or("");
            if terminal {
                print!("\r\x1b[2K");
            }
            println!("{}", step_line(meta, uses));
            printed = i + 1;
        }
        if ended {
            if terminal {
                print!("\r\x1b[2K");
            }
            let message = status.message.as_deref().unwrap_or_default();
            println!(
                "promotion {name}: {phase}{}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(" ({message})")
                }
            );
            return if phase == PromotionPhase::Succeeded {
                Ok(())
            } else {
                Err(CliError::new(
                    exit::FAILED,
                    format!(
                        "promotion {name} {}; see `dray logs promotion {name} -p {project}`",
                        phase.as_str().to_lowercase()
                    ),
                ))
            };
        }
        if terminal {
            let current = steps
                .get(printed)
                .and_then(|s| s["as"].as_str().or(s["uses"].as_str()))
                .unwrap_or("");
            print!(
                "\r\x1b[2K{} {} {current}",
                spinner[tick % spinner.len()],
                phase.as_str().to_lowercase()
            );
            let _ = std::io::stdout().flush();
            tick += 1;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

pub async fn abort(client: &Client, project: &str, name: &str) -> Result<(), CliError> {
    client
        .send(
            Method::POST,
            &format!(
                "/v1/projects/{}/promotions/{}/abort",
                segment(project),
                segment(name)
            ),
            None,
        )
        .await?;
    println!("promotion {name} aborted");
    Ok(())
}

fn print_entry(line: &[u8]) {
    match serde_json::from_slice::<Entry>(line) {
        Ok(e) if e.step.is_empty() => println!("{}", e.line),
        Ok(e) => println!("[{}] {}", e.step, e.line),
        Err(_) => println!("{}", String::from_utf8_lossy(line).trim_end()),
    }
}

/// Prints a Promotion's log; with `follow`, keeps printing until it ends.
pub async fn logs(
    client: &Client,
    project: &str,
    plural: &str,
    name: &str,
    follow: bool,
) -> Result<(), CliError> {
    let path = format!(
        "/v1/projects/{}/{plural}/{}/logs{}",
        segment(project),
        segment(name),
        if follow { "?follow=true" } else { "" }
    );
    let response = client.stream(&path).await?;
    let mut body = response.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| CliError::new(exit::UNREACHABLE, format!("the log stream broke: {e}")))?;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            print_entry(&line);
        }
    }
    if !pending.is_empty() {
        print_entry(&pending);
    }
    Ok(())
}
