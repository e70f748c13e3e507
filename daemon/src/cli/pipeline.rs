//! `dray approve`, `dray explain freight`, `dray get freight --stage`, `dray verify stage`,
//! `dray logs verification` and `dray promote --downstream-from`.

use crate::resource::status::{
    AnalysisPhase, AnalysisRunStatus, FreightStatus, PromotionStatus, StageStatus,
};
use std::time::{Duration, SystemTime};

use reqwest::Method;
use serde_json::{Value, json};

use super::client::{CliError, Client, exit};
use super::output;
use super::promote::segment;

/// Approves a Freight for a Stage.
pub async fn approve(
    client: &Client,
    project: &str,
    freight: &str,
    stage: &str,
) -> Result<(), CliError> {
    let answer = client
        .send(
            Method::POST,
            &format!(
                "/v1/projects/{}/freight/{}/approve",
                segment(project),
                segment(freight)
            ),
            Some(json!({ "stage": stage })),
        )
        .await?;
    let shown = answer["alias"].as_str().unwrap_or(freight);
    println!("Freight {shown} approved for Stage {stage}: it may be promoted there now");
    Ok(())
}

/// Says whether a Freight is available to a Stage, and why.
pub async fn explain(
    client: &Client,
    project: &str,
    freight: &str,
    stage: &str,
) -> Result<(), CliError> {
    let answer = client
        .send(
            Method::GET,
            &format!(
                "/v1/projects/{}/stages/{}/freight/{}",
                segment(project),
                segment(stage),
                segment(freight)
            ),
            None,
        )
        .await?;
    let shown = answer["alias"].as_str().unwrap_or(freight);
    let available = answer["available"].as_bool().unwrap_or(false);
    println!(
        "Freight {shown} ({}) is {}available to Stage {stage}{}",
        answer["freight"].as_str().unwrap_or_default(),
        if available { "" } else { "not " },
        if answer["inStage"] == true {
            " (it is there now)"
        } else {
            ""
        }
    );
    for reason in answer["reasons"].as_array().into_iter().flatten() {
        println!("  - {}", reason.as_str().unwrap_or_default());
    }
    let status: FreightStatus = super::promote::status_of(&answer, "Freight")?;
    for (stages, what) in [
        (status.currently_in.keys().collect::<Vec<_>>(), "in"),
        (status.verified_in.keys().collect(), "verified in"),
        (status.approved_for.keys().collect(), "approved for"),
    ] {
        if !stages.is_empty() {
            let stages: Vec<&str> = stages.into_iter().map(String::as_str).collect();
            println!("  {what}: {}", stages.join(", "));
        }
    }
    if !available {
        println!(
            "To let it in anyway: dray approve -p {project} --freight {shown} --stage {stage}"
        );
    }
    Ok(())
}

/// Lists the Freight a Stage may take, newest first.
pub async fn available(
    client: &Client,
    project: &str,
    stage: &str,
    no_headers: bool,
) -> Result<Vec<Value>, CliError> {
    let answer = client
        .send(
            Method::GET,
            &format!(
                "/v1/projects/{}/stages/{}/freight",
                segment(project),
                segment(stage)
            ),
            None,
        )
        .await?;
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|f| {
            let why = f["availability"]["reasons"][0].as_str().unwrap_or_default();
            vec![
                f["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                f["alias"].as_str().unwrap_or_default().to_string(),
                f["origin"]["name"].as_str().unwrap_or_default().to_string(),
                output::age(
                    f["metadata"]["creationTimestamp"].as_str(),
                    SystemTime::now(),
                ),
                why.to_string(),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!(
            "no Freight is available to Stage {stage} (ask why with `dray explain freight NAME --stage {stage}`)"
        );
        return Ok(items);
    }
    let header: &[&str] = if no_headers {
        &[]
    } else {
        &["NAME", "ALIAS", "ORIGIN", "AGE", "WHY"]
    };
    print!("{}", output::table(header, &rows));
    Ok(items)
}

/// Verifies what a Stage holds again, or aborts its verification; with `wait`, follows it to
/// its end and fails unless it succeeds.
pub async fn verify(
    client: &Client,
    project: &str,
    stage: &str,
    abort: bool,
    wait: bool,
) -> Result<(), CliError> {
    let base = format!(
        "/v1/projects/{}/stages/{}/verification",
        segment(project),
        segment(stage)
    );
    if abort {
        let answer = client
            .send(Method::POST, &format!("{base}/abort"), None)
            .await?;
        println!(
            "verification {} of Stage {stage} aborted",
            answer["aborted"].as_str().unwrap_or_default()
        );
        return Ok(());
    }
    let answer = client.send(Method::POST, &base, None).await?;
    let run = answer["analysisRun"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("verification {run} of Stage {stage} started");
    if wait {
        wait_for_run(client, project, &run).await?;
    }
    Ok(())
}

/// Polls an AnalysisRun until it ends; prints each metric's result.
pub async fn wait_for_run(client: &Client, project: &str, run: &str) -> Result<(), CliError> {
    let path = format!(
        "/v1/projects/{}/analysisruns/{}",
        segment(project),
        segment(run)
    );
    loop {
        let o = client.send(Method::GET, &path, None).await?;
        let status: AnalysisRunStatus = super::promote::status_of(&o, "AnalysisRun")?;
        let phase = status.phase();
        if phase.is_terminal() {
            for m in &status.metric_results {
                println!(
                    "  metric {:<20} {:<12} {} measurement(s){}",
                    m.name,
                    m.phase.as_str(),
                    m.measurements.len(),
                    m.message
                        .as_deref()
                        .map(|s| format!(": {s}"))
                        .unwrap_or_default()
                );
            }
            println!("verification {run}: {}", phase.as_str().to_lowercase());
            return if phase == AnalysisPhase::Successful {
                Ok(())
            } else {
                Err(CliError::new(
                    exit::FAILED,
                    format!(
                        "verification {run} ended {phase}: {}",
                        status.message.as_deref().unwrap_or_default()
                    ),
                ))
            };
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The AnalysisRun to show for `dray logs verification NAME`: NAME itself if it is a run,
/// otherwise the newest verification of Stage NAME.
pub async fn verification_run(
    client: &Client,
    project: &str,
    name: &str,
) -> Result<String, CliError> {
    let stage = client
        .send(
            Method::GET,
            &format!("/v1/projects/{}/stages/{}", segment(project), segment(name)),
            None,
        )
        .await;
    match stage {
        Ok(stage) => super::promote::status_of::<StageStatus>(&stage, "Stage")?
            .freight_history
            .iter()
            .find_map(|entry| entry.verification_history.first())
            .map(|v| v.id.clone())
            .ok_or_else(|| {
                CliError::new(
                    exit::NOT_FOUND,
                    format!("Stage {name} has not verified anything yet"),
                )
            }),
        Err(e) if e.code == exit::NOT_FOUND => Ok(name.to_string()),
        Err(e) => Err(e),
    }
}

/// Promotes a Freight to every Stage downstream of `stage`.
pub async fn promote_downstream(
    client: &Client,
    project: &str,
    stage: &str,
    freight: &str,
) -> Result<(), CliError> {
    let answer = client
        .send(
            Method::POST,
            &format!(
                "/v1/projects/{}/stages/{}/promote-downstream",
                segment(project),
                segment(stage)
            ),
            Some(json!({ "freight": freight })),
        )
        .await?;
    for p in answer["items"].as_array().into_iter().flatten() {
        let status: PromotionStatus = super::promote::status_of(p, "Promotion")?;
        println!(
            "promotion {} created: Freight {} into Stage {}",
            p["metadata"]["name"].as_str().unwrap_or_default(),
            status.freight.as_ref().map_or("", |f| f.shown()),
            p["spec"]["stage"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}
