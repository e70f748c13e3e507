//! `dray token create|list|revoke` and `dray whoami`: API tokens for people and machines.

use reqwest::Method;
use serde_json::{Value, json};

use super::TokenCommand;
use super::client::{CliError, Client};
use super::output;

pub(super) async fn run(client: &Client, command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create {
            name,
            role,
            projects,
            all_projects,
        } => {
            let answer = client
                .send(
                    Method::POST,
                    "/v1/tokens",
                    Some(json!({
                        "name": name,
                        "role": role,
                        "projects": projects,
                        "allProjects": all_projects,
                    })),
                )
                .await?;
            // The token alone on standard output, so scripts can take it; the rest on stderr.
            println!("{}", answer["token"].as_str().unwrap_or_default());
            eprintln!(
                "dray: token {name:?} ({}) created; it is shown this once and stored hashed: keep it now (pass it as --token or DRAY_TOKEN)",
                scope(&answer["item"])
            );
        }
        TokenCommand::List => {
            let answer = client.send(Method::GET, "/v1/tokens", None).await?;
            let rows: Vec<Vec<String>> = answer["items"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    vec![
                        t["name"].as_str().unwrap_or_default().to_string(),
                        scope(t),
                        t["created"].as_str().unwrap_or_default().to_string(),
                        t["createdBy"].as_str().unwrap_or_default().to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                output::table(&["NAME", "ROLE", "CREATED", "CREATED-BY"], &rows)
            );
        }
        TokenCommand::Revoke { name } => {
            client
                .send(Method::DELETE, &format!("/v1/tokens/{name}"), None)
                .await?;
            println!("token {name:?} revoked");
        }
    }
    Ok(())
}

/// `promoter in shop,bank`, `viewer in every project`, `system-admin`.
fn scope(token: &Value) -> String {
    let role = token["role"].as_str().unwrap_or_default();
    if role == "system-admin" {
        return role.to_string();
    }
    match &token["scope"] {
        Value::Object(o) if o.contains_key("projects") => {
            let projects = output::strings(&o["projects"]);
            format!("{role} in {}", projects.join(","))
        }
        _ => format!("{role} in every project"),
    }
}

/// `dray whoami`: who the daemon takes this CLI's token for.
pub(super) async fn whoami(client: &Client) -> Result<(), CliError> {
    let answer = client.send(Method::GET, "/v1/whoami", None).await?;
    println!("{}", answer["summary"].as_str().unwrap_or_default());
    Ok(())
}
