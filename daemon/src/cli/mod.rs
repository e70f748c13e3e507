//! The `dray` command line. `dray serve` runs the daemon; every other command is a client of its
//! API and finds the token of a local daemon by itself.

mod client;
mod demo;
mod freight;
mod login;
pub mod output;
mod pipeline;
mod plugin;
mod promote;
mod token;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Method;
use serde_json::{Value, json};

pub use client::exit;
use client::{CliError, Client};

use crate::admission::Source;
use crate::resource::Kind;
use crate::service::{self, Config};

#[derive(Parser, Debug)]
#[command(
    name = "dray",
    version,
    about = "Promotion daemon for GitOps delivery: Freight through a DAG of Stages"
)]
pub struct Cli {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct Connection {
    /// The daemon's API address: `http://HOST:PORT`, `https://HOST:PORT` (a private CA's
    /// certificate in DRAY_CA_CERT), or `unix:/PATH` for its Unix socket.
    #[arg(
        long,
        global = true,
        env = "DRAY_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    server: String,
    /// The API token (default: read from the local daemon's data dir).
    #[arg(long, global = true, env = "DRAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The daemon's data dir, where `dray serve` keeps its database and token.
    #[arg(long, global = true, env = "DRAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon.
    Serve {
        /// Address to listen on [default: 127.0.0.1:7070, or DRAY_LISTEN, or the config file's].
        #[arg(long)]
        listen: Option<String>,
        /// A TOML config file (keys: data-dir, listen, apply) [default: ~/.config/dray/config.toml if present].
        #[arg(long, env = "DRAY_CONFIG")]
        config: Option<PathBuf>,
        /// Manifests (files or directories) to apply at start, in one transaction; the daemon
        /// does not start if they are invalid. May be repeated.
        #[arg(long = "apply")]
        apply: Vec<PathBuf>,
        /// Log lines as text or as JSON, one object per line (for journald and log shippers)
        /// [default: DRAY_LOG_FORMAT, or the config file's log-format, or text].
        #[arg(long, value_enum)]
        log_format: Option<crate::service::LogFormat>,
        /// Where the resources are kept: `embedded` (a file in the data dir) or `kubernetes`
        /// (custom resources in the cluster kubectl would use, or the config's [kubernetes])
        /// [default: the config file's store, or embedded].
        #[arg(long, value_enum)]
        store: Option<crate::service::StoreKind>,
    },
    /// Create or update resources from YAML/JSON files, directories or standard input (`-`).
    /// All documents are applied in one transaction: all or nothing.
    Apply {
        /// A file, a directory (its .yaml, .yml and .json files) or `-`; may be repeated.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// Project for documents that do not set metadata.namespace.
        #[arg(short, long, env = "DRAY_PROJECT")]
        project: Option<String>,
        /// Check everything against the daemon's state, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show resources: `dray get stages -p demo`, `dray get stage test -o yaml`.
    Get {
        /// Resource type: projects, projectconfigs, warehouses, stages, freight, promotions,
        /// promotiontasks, analysistemplates, secrets (singular and short forms work too); or
        /// `all` for a project's definitions, ready to apply again (`-o yaml`).
        kind: String,
        /// One resource by name (Freight also by alias).
        name: Option<String>,
        /// The project [default: all projects].
        #[arg(short, long, env = "DRAY_PROJECT")]
        project: Option<String>,
        /// Only resources whose labels match, e.g. `tier=web,env in (dev,uat)`.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Leave out the table header.
        #[arg(long)]
        no_headers: bool,
        /// With `freight`: only the Freight this Stage may take now, newest first.
        #[arg(long)]
        stage: Option<String>,
        /// With `all`: export the Secrets' values too (system admins only).
        #[arg(long)]
        include_secrets: bool,
    },
    /// Let a Freight into a Stage without verification or soak upstream:
    /// `dray approve -p shop --freight wonky-wombat --stage prod`.
    Approve {
        /// The Freight's name or alias.
        #[arg(long)]
        freight: String,
        #[arg(long)]
        stage: String,
        #[arg(short, long, env = "DRAY_PROJECT")]
        project: Option<String>,
    },
    /// Say why a Freight is or is not available to a Stage:
    /// `dray explain freight wonky-wombat --stage prod -p shop`.
    Explain {
        /// `freight`.
        kind: String,
        /// The Freight's name or alias.
        name: String,
        #[arg(long)]
        stage: String,
        #[arg(short, long, env = "DRAY_PROJECT")]
        project: Option<String>,
    },
    /// Verify again what a Stage holds (`dray verify stage uat`), or `--abort` its verification.
    Verify {
        /// `stage`.
        kind: String,
        name: String,
        #[arg(short, long, env = "DRAY_PROJECT")]
        project: Option<String>,
        /// Stop the running verification instead.
        #[arg(long)]
        abort: bool,
        /// Follow the verification to its end; exit non-zero unless it succeeds.
        #[arg(long, conflicts_with = "abort")]
        wait: bool,
    },
    /// Delete a resource; deleting a project deletes everything in it.
    Delete {
        kind: String,
        name: String,
        #[arg(short, long, env = "DRAY_PROJECT")]
        project: Option<String>,
    },
    /// Promote a Freight into a Stage (`--stage S --freight NAME|ALIAS`), several in one
    /// Promotion (`--freight A --freight B`, or `--all-newest`), into every Stage downstream of
    /// one (`--downstream-from S`), or abort a Promotion.
    Promote {
        /// The Stage to promote into.
        #[arg(long, required_unless_present_any = ["abort", "downstream_from"])]
        stage: Option<String>,
        /// Promote into every Stage that takes Freight from this one.
        #[arg(long, conflicts_with_all = ["stage", "wait", "all_newest"])]
        downstream_from: Option<String>,
        /// The Freight's name or alias; repeat it to promote Freight of several origins in one
        /// Promotion (one run of the steps, one commit).
        #[arg(long, required_unless_present_any = ["abort", "all_newest"])]
        freight: Vec<String>,
        /// Promote the newest available Freight of every origin the Stage requests (that it
        /// does not hold yet) in one Promotion.
        #[arg(long, conflicts_with = "freight")]
        all_newest: bool,
        /// With --all-newest: only the origins whose Warehouses carry these labels
        /// (`team=shop,tier in (web,api)`).
        #[arg(long, value_name = "SELECTOR", requires = "all_newest")]
        origins: Option<String>,
        #[arg(short, long, env = "DRAY_PROJECT")]
        project: Option<String>,
        /// Follow the Promotion step by step; exit non-zero unless it succeeds.
        #[arg(long)]
        wait: bool,
        /// Abort this Promotion instead.
        #[arg(long, value_name = "PROMOTION", conflicts_with_all = ["stage", "freight", "all_newest"])]
        abort: Option<String>,
    },
    /// Print a Promotion's step logs (`dray logs promotion NAME`) or a verification's
    /// measurements and verifier logs (`dray logs verification STAGE|ANALYSISRUN`).
    Logs {
        /// `promotion` or `verification`.
        kind: String,
        name: String,
        #[arg(short, long, env = "DRAY_PROJECT")]
        project: Option<String>,
        /// Keep printing new lines until the Promotion ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Plugins (WebAssembly components): inspect and run one locally, publish to and pull from OCI
    /// registries, and see or update what the daemon runs.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Create Freight by hand.
    #[command(subcommand)]
    Freight(FreightCommand),
    /// Discover a Warehouse's artifacts now: `dray refresh warehouse app -p shop --wait`.
    Refresh {
        /// `warehouse` (the only kind that refreshes).
        kind: String,
        name: String,
        #[arg(short, long, env = "DRAY_PROJECT")]
        project: String,
        /// Wait for the discovery to end and say what it found; exit 1 if it reported problems.
        #[arg(long)]
        wait: bool,
    },
    /// Run the whole pipeline on this machine with nothing but this binary: local Git
    /// repositories, an embedded daemon, dev → staging → prod, narrated live.
    Demo {
        /// Where to put the repositories and the daemon's data [default: a temporary
        /// directory, removed at the end].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Address of the embedded daemon (another free port is taken if it is busy).
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Stop once the second Freight waits for prod, instead of running until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// API tokens for people and machines (system admins only): `dray token create ci-bot
    /// --role promoter -p shop`.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Say who the daemon takes this CLI's token for: its actor, role and projects.
    Whoami,
    /// Sign in with the daemon's OpenID Connect provider (open a URL, enter a code); later
    /// commands to this server act as you, with your groups' roles.
    Login,
    /// Forget the sign-in for this server.
    Logout,
    /// Save a consistent copy of the whole store of a running daemon (system admins): every
    /// project, Freight, Promotion, Secret and token hash. Keep it as private as the data dir.
    Backup {
        /// Where to write it (a new file, mode 0600).
        file: PathBuf,
    },
    /// Put a backup back as the data file of a stopped daemon (`--data-dir`); the file it
    /// replaces is kept beside it.
    Restore {
        /// A file `dray backup` wrote.
        file: PathBuf,
    },
    /// Print the CustomResourceDefinitions of Dray's kinds on Kubernetes (compatible with
    /// Kargo's and Argo Rollouts'): `dray crds | kubectl apply -f -`.
    Crds,
    /// Print the CLI's and the daemon's versions.
    Version {
        /// Only the CLI's version; do not ask the daemon.
        #[arg(long)]
        client: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum TokenCommand {
    /// Make a token and print it, once; the daemon keeps only its hash.
    Create {
        /// What to call it; changes it makes are recorded as by `token:NAME`.
        name: String,
        /// viewer reads; promoter also promotes, approves, aborts, verifies and refreshes;
        /// admin also applies and deletes; system-admin does everything everywhere.
        #[arg(long, value_enum)]
        role: crate::auth::Role,
        /// A project the role holds in; may be repeated.
        #[arg(short = 'p', long = "project", value_name = "PROJECT")]
        projects: Vec<String>,
        /// The role holds in every project, present and future.
        #[arg(long, conflicts_with = "projects")]
        all_projects: bool,
    },
    /// List the tokens: name, role and projects, when and by whom made (never the token).
    #[command(alias = "ls")]
    List,
    /// Revoke a token: requests carrying it are refused from now on.
    Revoke { name: String },
}

#[derive(Subcommand, Debug)]
pub(crate) enum FreightCommand {
    /// Create a Freight of a Warehouse from artifact references:
    /// `dray freight create -p shop --warehouse app --image ghcr.io/acme/web:1.2.3`.
    Create {
        #[arg(short, long, env = "DRAY_PROJECT")]
        project: String,
        /// The Warehouse it belongs to (its origin).
        #[arg(long)]
        warehouse: String,
        /// An image: REPOSITORY:TAG, REPOSITORY@DIGEST or both; may be repeated.
        #[arg(long = "image", value_name = "IMAGE")]
        images: Vec<String>,
        /// A commit: REPOSITORY_URL#COMMIT_ID; may be repeated.
        #[arg(long = "commit", value_name = "URL#ID")]
        commits: Vec<String>,
        /// A chart: https://REPO/NAME:VERSION or oci://HOST/PATH/NAME:VERSION; may be repeated.
        #[arg(long = "chart", value_name = "CHART")]
        charts: Vec<String>,
        /// A human alias [default: one is generated].
        #[arg(long)]
        alias: Option<String>,
        /// Take the newest discovered candidate of every subscription of the Warehouse (how a
        /// `freightCreationPolicy: Manual` Warehouse's Freight is made); `--image` and friends
        /// add to it. An `--image` without a digest gets the one discovery found for its tag.
        #[arg(long)]
        newest: bool,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PluginCommand {
    /// Show a plugin's step kinds, their config schemas and the capabilities they need.
    Inspect {
        /// A `.wasm` component, `builtin:NAME` for a plugin built into dray, or
        /// `oci://HOST/REPO:TAG` (or `@sha256:…`) for one in a registry.
        plugin: String,
    },
    /// Publish a component to an OCI registry in the CNCF Wasm layout (as `wkg oci push`).
    /// Credentials: DRAY_REGISTRY_USERNAME and DRAY_REGISTRY_PASSWORD, if the registry wants any.
    Push {
        /// Where: `oci://HOST/REPO:TAG` (the `oci://` may be left out).
        reference: String,
        /// The `.wasm` component.
        file: PathBuf,
        /// A manifest annotation `KEY=VALUE` (e.g. `org.opencontainers.image.source=…`); may be
        /// repeated.
        #[arg(long = "annotation", value_name = "KEY=VALUE")]
        annotations: Vec<String>,
        /// Sign it with this key (cosign's `cosign.key`, its password in COSIGN_PASSWORD, or an
        /// unencrypted PKCS#8 ECDSA/Ed25519 key in PEM), as cosign stores signatures, for
        /// daemons whose `[[steps.oci]] keys` require one.
        #[arg(long, value_name = "FILE")]
        sign_key: Option<PathBuf>,
    },
    /// Make a signing key pair as `cosign generate-key-pair` does: PREFIX.key (ECDSA P-256,
    /// encrypted with the password in COSIGN_PASSWORD) and PREFIX.pub (for `[[steps.oci]] keys`).
    GenerateKey {
        /// Where to write them: PREFIX.key and PREFIX.pub.
        #[arg(long, default_value = "cosign")]
        output_prefix: PathBuf,
    },
    /// List what the daemon runs: its step and verifier kinds, and the pinned plugins from
    /// registries with the digest each runs.
    Ls,
    /// Resolve a pinned reference's tag again, so Promotions that start afterwards run what it
    /// names now (the daemon never re-resolves by itself).
    Update {
        /// `oci://HOST/REPO:TAG`, as Stages write it.
        reference: String,
        /// The project whose `cred-type: image` Secrets authenticate to the registry.
        #[arg(short, long)]
        project: Option<String>,
    },
    /// Publish Dray's WIT contract (`dray:plugin`) as a binary WIT package in the CNCF Wasm OCI
    /// layout, as `wkg publish` does, so plugin authors in any language fetch it with
    /// `wkg get dray:plugin@VERSION`. Credentials: DRAY_REGISTRY_USERNAME and
    /// DRAY_REGISTRY_PASSWORD.
    PushWit {
        /// `oci://HOST/REPO[:TAG]`; the tag defaults to the package's version. wkg looks for
        /// `dray:plugin` at `HOST/PREFIXdray/plugin` (PREFIX: the registry's namespace prefix).
        reference: String,
    },
    /// Download a component from an OCI registry, every digest checked, and print its digest.
    Pull {
        /// `oci://HOST/REPO:TAG` or `oci://HOST/REPO@sha256:…` (the `oci://` may be left out).
        reference: String,
        /// Where to write it (default: the repository's last name + `.wasm`).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run one step in the same sandbox the daemon uses, and print its log and result.
    Run {
        /// A `.wasm` component, or `builtin:NAME`.
        plugin: String,
        /// The step kind, e.g. `compose-output`.
        #[arg(long)]
        kind: String,
        /// The step's config: JSON, or `@FILE` to read it from a file.
        #[arg(long, default_value = "{}")]
        config: String,
        /// The work directory the step sees as its file system.
        #[arg(long)]
        workdir: PathBuf,
        /// Stop the step after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Memory limit in MiB.
        #[arg(long, default_value_t = 256)]
        memory: usize,
        /// Let the step make HTTP requests to this host (`*`, `*.example.com`, `host[:port]`,
        /// `https://host[:port]`); may be repeated. Without it, HTTP is not granted.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// Let the step read secret NAME, whose keys and values are in FILE (a JSON object of
        /// strings); may be repeated. Without it, credentials are not granted.
        #[arg(long = "secret", value_name = "NAME=FILE")]
        secrets: Vec<String>,
        /// Grant the `git` capability: anonymous remotes, and local repositories under
        /// `--git-local-root`.
        #[arg(long)]
        allow_git: bool,
        /// With --allow-git: a directory whose local repositories (`file://` URLs, paths) the
        /// step may clone; may be repeated.
        #[arg(long = "git-local-root", value_name = "DIR")]
        git_local_roots: Vec<PathBuf>,
        /// Grant the `oci` capability: copy and download from registries, with the credentials
        /// in DRAY_REGISTRY_USERNAME and DRAY_REGISTRY_PASSWORD if set.
        #[arg(long)]
        allow_oci: bool,
        /// Grant the `helm` capability: list and pull charts from chart repositories and
        /// registries, with the same credentials.
        #[arg(long)]
        allow_helm: bool,
        /// Grant the `kube` capability in the cluster of this kubeconfig file (cluster name
        /// `local`), with the rules of --kube, in the namespaces of --kube-namespace.
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// With --kubeconfig: its context (default: its current one).
        #[arg(long, value_name = "NAME")]
        kube_context: Option<String>,
        /// With --kubeconfig: a namespace the step may reach (a name or `*` pattern); may be
        /// repeated.
        #[arg(long = "kube-namespace", value_name = "NAMESPACE")]
        kube_namespaces: Vec<String>,
        /// With --kubeconfig: what the step may do to which kind (`get,patch
        /// Application.argoproj.io`, `* ConfigMap`); may be repeated. A built-in plugin has its
        /// own.
        #[arg(long = "kube", value_name = "RULE")]
        kube_rules: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Yaml,
    Json,
}

/// Entry point of the `dray` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        // Client commands log warnings only (e.g. from the plugin runtime); `serve` sets its own.
        let filter = tracing_subscriber::EnvFilter::try_from_env("DRAY_LOG")
            .unwrap_or_else(|_| "warn".into());
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    // systemd's sockets are taken before any thread starts: taking them edits the environment.
    let activated = if matches!(cli.command, Command::Serve { .. }) {
        match service::Activated::from_env() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(exit::FAILED);
            }
        }
    } else {
        service::Activated::default()
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(dispatch(cli, activated)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for problem in &e.problems {
                eprintln!("{problem}");
            }
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn need_project(project: Option<String>) -> Result<String, CliError> {
    project.ok_or_else(|| {
        CliError::new(
            exit::USAGE,
            "which project? pass -p PROJECT or set DRAY_PROJECT",
        )
    })
}

async fn dispatch(cli: Cli, activated: service::Activated) -> Result<(), CliError> {
    let conn = cli.connection;
    let connect = || Client::new(&conn.server, conn.token.clone(), conn.data_dir.clone());
    match cli.command {
        Command::Serve {
            listen,
            config,
            apply,
            log_format,
            store,
        } => {
            serve(
                listen,
                config,
                apply,
                conn.data_dir,
                (log_format, store),
                activated,
            )
            .await
        }
        Command::Apply {
            files,
            project,
            dry_run,
        } => apply(&connect()?, &files, project, dry_run).await,
        Command::Get {
            kind,
            name,
            project,
            selector,
            output,
            no_headers,
            stage,
            include_secrets,
        } => {
            if kind == "all" {
                let project = need_project(project)?;
                return export(&connect()?, &project, output, include_secrets).await;
            }
            if let Some(stage) = stage {
                if parse_kind(&kind)? != Kind::Freight {
                    return Err(CliError::new(
                        exit::USAGE,
                        "--stage goes with `dray get freight`",
                    ));
                }
                let project = need_project(project)?;
                let items = pipeline::available(
                    &connect()?,
                    &project,
                    &stage,
                    no_headers || output != Format::Table,
                )
                .await?;
                match output {
                    Format::Table => {}
                    Format::Json => println!(
                        "{}",
                        serde_json::to_string_pretty(&json!({ "items": items }))
                            .unwrap_or_default()
                    ),
                    Format::Yaml => print!("{}", output::yaml(&items)),
                }
                return Ok(());
            }
            get(
                &connect()?,
                &kind,
                name,
                project,
                selector,
                output,
                no_headers,
            )
            .await
        }
        Command::Delete {
            kind,
            name,
            project,
        } => delete(&connect()?, &kind, &name, project).await,
        Command::Refresh {
            kind,
            name,
            project,
            wait,
        } => {
            if parse_kind(&kind)? != Kind::Warehouse {
                return Err(CliError::new(
                    exit::USAGE,
                    format!("only warehouses refresh, not {kind}"),
                ));
            }
            freight::refresh(&connect()?, &project, &name, wait).await
        }
        Command::Freight(FreightCommand::Create {
            project,
            warehouse,
            images,
            commits,
            charts,
            alias,
            newest,
        }) => {
            let request = freight::Request {
                project: &project,
                warehouse: &warehouse,
                images: &images,
                commits: &commits,
                charts: &charts,
                alias: alias.as_deref(),
                newest,
            };
            freight::create(&connect()?, request).await
        }
        Command::Approve {
            freight,
            stage,
            project,
        } => pipeline::approve(&connect()?, &need_project(project)?, &freight, &stage).await,
        Command::Explain {
            kind,
            name,
            stage,
            project,
        } => {
            if parse_kind(&kind)? != Kind::Freight {
                return Err(CliError::new(
                    exit::USAGE,
                    format!(
                        "only freight can be explained, not {kind}: `dray explain freight NAME --stage S`"
                    ),
                ));
            }
            pipeline::explain(&connect()?, &need_project(project)?, &name, &stage).await
        }
        Command::Verify {
            kind,
            name,
            project,
            abort,
            wait,
        } => {
            if parse_kind(&kind)? != Kind::Stage {
                return Err(CliError::new(
                    exit::USAGE,
                    format!("only stages verify, not {kind}: `dray verify stage NAME`"),
                ));
            }
            pipeline::verify(&connect()?, &need_project(project)?, &name, abort, wait).await
        }
        Command::Promote {
            stage,
            downstream_from,
            freight,
            all_newest,
            origins,
            project,
            wait,
            abort,
        } => {
            let project = need_project(project)?;
            let client = connect()?;
            if let Some(from) = downstream_from {
                let [freight] = <[String; 1]>::try_from(freight).map_err(|_| {
                    CliError::new(
                        exit::USAGE,
                        "--downstream-from takes one --freight: it is promoted into every Stage downstream",
                    )
                })?;
                return pipeline::promote_downstream(&client, &project, &from, &freight).await;
            }
            match abort {
                Some(name) => promote::abort(&client, &project, &name).await,
                None => {
                    let what = match (freight.len(), all_newest) {
                        (_, true) => {
                            let origins = origins
                                .as_deref()
                                .map(crate::resource::LabelSelector::parse)
                                .transpose()
                                .map_err(|e| {
                                    CliError::new(exit::USAGE, format!("--origins: {e}"))
                                })?;
                            json!({ "allNewest": true, "origins": origins })
                        }
                        (1, false) => json!({ "freight": freight[0] }),
                        _ => json!({ "batch": freight }),
                    };
                    let stage = stage.unwrap_or_default();
                    promote::promote(&client, &project, &stage, what, wait).await
                }
            }
        }
        Command::Logs {
            kind,
            name,
            project,
            follow,
        } => {
            let project = need_project(project)?;
            let client = connect()?;
            match kind.as_str() {
                "promotion" | "promotions" | "promo" => {
                    promote::logs(&client, &project, "promotions", &name, follow).await
                }
                "verification" | "verifications" | "analysisrun" | "analysisruns" => {
                    let run = pipeline::verification_run(&client, &project, &name).await?;
                    promote::logs(&client, &project, "analysisruns", &run, follow).await
                }
                _ => Err(CliError::new(
                    exit::USAGE,
                    format!(
                        "no logs for {kind:?}: use `dray logs promotion NAME` or `dray logs verification STAGE`"
                    ),
                )),
            }
        }
        Command::Plugin(PluginCommand::Ls) => plugin::list(&connect()?).await,
        Command::Plugin(PluginCommand::Update { reference, project }) => {
            plugin::update(&connect()?, &reference, project).await
        }
        Command::Plugin(command) => plugin::run(command).await,
        Command::Demo { dir, listen, once } => demo::run(demo::Options { dir, listen, once }).await,
        Command::Token(command) => token::run(&connect()?, command).await,
        Command::Whoami => token::whoami(&connect()?).await,
        Command::Login => {
            let server = conn.server.trim_end_matches('/');
            Client::anonymous(server, None)?.login().await?;
            token::whoami(&connect()?).await
        }
        Command::Logout => {
            let server = conn.server.trim_end_matches('/');
            if login::logout(server)? {
                println!("signed out of {server}");
            } else {
                println!("not signed in to {server}");
            }
            Ok(())
        }
        Command::Backup { file } => backup(&connect()?, &file).await,
        Command::Crds => {
            print!(
                "{}",
                output::yaml(&crate::store::kubernetes::crds::definitions())
            );
            Ok(())
        }
        Command::Restore { file } => {
            let data_dir = conn.data_dir.unwrap_or_else(service::default_data_dir);
            let restored = service::restore(&data_dir, &file)
                .map_err(|e| CliError::new(exit::FAILED, format!("{e:#}")))?;
            println!(
                "restored {} into {}: {} project(s), up to change {}",
                file.display(),
                data_dir.display(),
                restored.projects,
                restored.last_sequence
            );
            if let Some(previous) = restored.previous {
                println!(
                    "the data file it replaced is kept as {}",
                    previous.display()
                );
            }
            Ok(())
        }
        Command::Version { client } => {
            println!("dray {}", env!("CARGO_PKG_VERSION"));
            if !client {
                match connect() {
                    Ok(c) => match c.send(Method::GET, "/v1/version", None).await {
                        Ok(v) => println!(
                            "daemon {} at {}",
                            v["version"].as_str().unwrap_or("?"),
                            conn.server
                        ),
                        Err(e) => println!("daemon: not reachable ({})", e.message),
                    },
                    Err(e) => println!("daemon: not reachable ({})", e.message),
                }
            }
            Ok(())
        }
    }
}

async fn serve(
    listen: Option<String>,
    config_file: Option<PathBuf>,
    apply: Vec<PathBuf>,
    data_dir: Option<PathBuf>,
    (log_format, store): (
        Option<crate::service::LogFormat>,
        Option<crate::service::StoreKind>,
    ),
    activated: service::Activated,
) -> Result<(), CliError> {
    let fail = |e: anyhow::Error| CliError::new(exit::FAILED, format!("{e:#}"));
    let file = config_file.or_else(service::default_config_file);
    let mut config = Config::load(file.as_deref(), |k| std::env::var(k).ok()).map_err(fail)?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    if let Some(format) = log_format {
        config.log_format = format;
    }
    if let Some(store) = store {
        config.store = store;
    }
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("DRAY_LOG").unwrap_or_else(|_| "info".into());
    match config.log_format {
        crate::service::LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // journald adds its own timestamps; a terminal user still sees them.
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
        crate::service::LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init(),
    }
    config.apply.extend(apply);
    if let Some(listen) = listen {
        config.listen = listen.parse().map_err(|_| {
            CliError::new(
                exit::USAGE,
                format!("--listen {listen:?} is not an address like 127.0.0.1:7070"),
            )
        })?;
    }
    // systemd's TCP socket, when it passed one (`dray.socket`), else the configured address.
    let tcp = match activated.tcp {
        Some(tcp) => {
            tcp.set_nonblocking(true).map_err(|e| fail(e.into()))?;
            tokio::net::TcpListener::from_std(tcp).map_err(|e| fail(e.into()))?
        }
        None => tokio::net::TcpListener::bind(config.listen).await.map_err(|e| {
            CliError::new(exit::FAILED, format!("cannot listen on {}: {e} (is another dray running? choose another with --listen)", config.listen))
        })?,
    };
    let listeners = service::Listeners {
        tcp,
        unix: activated.unix,
    };
    service::run_on(config, listeners, service::shutdown_signal())
        .await
        .map_err(fail)
}

/// `dray get all -p P`: the project's definitions, ready to apply again (`-o yaml`).
async fn export(
    client: &Client,
    project: &str,
    output: Format,
    secrets: bool,
) -> Result<(), CliError> {
    let path = format!(
        "/v1/projects/{}/export{}",
        urlencode(project),
        if secrets { "?secrets=true" } else { "" }
    );
    let answer = client.send(Method::GET, &path, None).await?;
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    let left_out = output::strings(&answer["secretsLeftOut"]);
    match output {
        Format::Yaml => {
            println!(
                "# Project {project}, exported by dray {}: apply it with `dray apply -f FILE`.",
                env!("CARGO_PKG_VERSION")
            );
            if !left_out.is_empty() {
                println!(
                    "# Secrets left out (their values stay in the daemon; bring them from where you keep them): {}",
                    left_out.join(", ")
                );
            }
            print!("{}", output::yaml(&items));
        }
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "items": items, "secretsLeftOut": left_out }))
                .unwrap_or_default()
        ),
        Format::Table => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| {
                    vec![
                        i["kind"].as_str().unwrap_or_default().to_string(),
                        i["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                    ]
                })
                .collect();
            print!("{}", output::table(&["KIND", "NAME"], &rows));
            if !left_out.is_empty() {
                println!("(Secrets left out: {})", left_out.join(", "));
            }
        }
    }
    Ok(())
}

/// `dray backup FILE`: streams `GET /v1/backup` into a new private file, renamed into place
/// once complete (an interrupted backup leaves no file that looks whole).
async fn backup(client: &Client, file: &std::path::Path) -> Result<(), CliError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |what: String| CliError::new(exit::FAILED, what);
    if file.exists() {
        return Err(CliError::new(
            exit::USAGE,
            format!("{} exists: name a new file", file.display()),
        ));
    }
    let mut response = client.stream("/v1/backup").await?;
    let partial = std::path::PathBuf::from(format!("{}.partial", file.display()));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(|e| fail(format!("cannot create {}: {e}", partial.display())))?;
    let mut bytes = 0u64;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(fail(format!("the backup was cut off: {e}")));
            }
        };
        bytes += chunk.len() as u64;
        out.write_all(&chunk)
            .map_err(|e| fail(format!("cannot write {}: {e}", partial.display())))?;
    }
    out.sync_all()
        .map_err(|e| fail(format!("cannot write {}: {e}", partial.display())))?;
    std::fs::rename(&partial, file)
        .map_err(|e| fail(format!("cannot write {}: {e}", file.display())))?;
    println!(
        "backup written to {} ({bytes} bytes, mode 0600): it holds every Secret; restore it with `dray restore {}` on a stopped daemon",
        file.display(),
        file.display()
    );
    Ok(())
}

fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let encoded: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if encoded.is_empty() {
        String::new()
    } else {
        format!("?{}", encoded.join("&"))
    }
}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn apply(
    client: &Client,
    files: &[String],
    project: Option<String>,
    dry_run: bool,
) -> Result<(), CliError> {
    let sources = Source::read_all(files).map_err(|e| CliError::new(exit::FAILED, e))?;
    let path = format!(
        "/v1/apply{}",
        query(&[
            ("project", project.as_deref()),
            ("dryRun", dry_run.then_some("true"))
        ])
    );
    let answer = client
        .send(Method::POST, &path, Some(json!({ "sources": sources })))
        .await?;
    let suffix = if dry_run { " (dry run)" } else { "" };
    for item in answer["items"].as_array().into_iter().flatten() {
        println!(
            "{} {}{suffix}",
            describe(item),
            item["action"].as_str().unwrap_or("?")
        );
        let warnings = item["warnings"].as_array().into_iter().flatten();
        for warning in warnings.cloned() {
            if let Ok(problem) = serde_json::from_value::<crate::admission::Problem>(warning) {
                eprintln!("warning: {problem}");
            }
        }
    }
    Ok(())
}

/// `Stage kargo-demo/test` (or `Project kargo-demo`) from an outcome the API returned.
fn describe(item: &Value) -> String {
    let kind = item["kind"].as_str().unwrap_or("?");
    let name = item["name"].as_str().unwrap_or("?");
    match item["project"].as_str().unwrap_or("") {
        "" => format!("{kind} {name}"),
        project => format!("{kind} {project}/{name}"),
    }
}

fn parse_kind(kind: &str) -> Result<Kind, CliError> {
    kind.parse()
        .map_err(|e: String| CliError::new(exit::USAGE, e))
}

async fn get(
    client: &Client,
    kind: &str,
    name: Option<String>,
    project: Option<String>,
    selector: Option<String>,
    output: Format,
    no_headers: bool,
) -> Result<(), CliError> {
    let kind = parse_kind(kind)?;
    let project = project.filter(|_| kind.namespaced());
    let items: Vec<Value> = match (&name, &project) {
        (Some(name), _) if kind == Kind::Project => {
            vec![
                client
                    .send(Method::GET, &format!("/v1/projects/{name}"), None)
                    .await?,
            ]
        }
        (Some(name), Some(p)) => vec![
            client
                .send(
                    Method::GET,
                    &format!("/v1/projects/{p}/{}/{name}", kind.plural()),
                    None,
                )
                .await?,
        ],
        (Some(name), None) => {
            // No project given: look in every project.
            let all = client
                .send(Method::GET, &format!("/v1/{}", kind.plural()), None)
                .await?;
            let found: Vec<Value> = all["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| {
                    o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                        || o.get("alias").and_then(Value::as_str) == Some(name)
                })
                .cloned()
                .collect();
            match found.len() {
                0 => {
                    return Err(CliError::new(
                        exit::NOT_FOUND,
                        format!("{kind} {name:?} not found in any project"),
                    ));
                }
                1 => found,
                _ => {
                    let projects: Vec<&str> = found
                        .iter()
                        .filter_map(|o| o.pointer("/metadata/namespace").and_then(Value::as_str))
                        .collect();
                    return Err(CliError::new(
                        exit::USAGE,
                        format!(
                            "{kind} {name:?} exists in projects {}: say which with -p",
                            projects.join(", ")
                        ),
                    ));
                }
            }
        }
        (None, _) => {
            let base = match (&project, kind) {
                (_, Kind::Project) => "/v1/projects".to_string(),
                (Some(p), _) => format!("/v1/projects/{p}/{}", kind.plural()),
                (None, _) => format!("/v1/{}", kind.plural()),
            };
            let path = format!("{base}{}", query(&[("labelSelector", selector.as_deref())]));
            let list = client.send(Method::GET, &path, None).await?;
            list["items"].as_array().cloned().unwrap_or_default()
        }
    };
    match output {
        Format::Json => {
            let value = if name.is_some() {
                items[0].clone()
            } else {
                json!({ "items": items })
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
        }
        Format::Yaml => print!("{}", output::yaml(&items)),
        Format::Table if items.is_empty() => {
            let inside = project
                .map(|p| format!(" in project {p}"))
                .unwrap_or_default();
            eprintln!("No {} found{inside}.", kind.plural());
        }
        Format::Table => {
            let with_project = kind.namespaced() && project.is_none();
            let table = output::objects_table(kind, &items, with_project, SystemTime::now());
            let body = if no_headers {
                table.split_once('\n').map_or("", |(_, rest)| rest)
            } else {
                &table
            };
            print!("{body}");
        }
    }
    Ok(())
}

async fn delete(
    client: &Client,
    kind: &str,
    name: &str,
    project: Option<String>,
) -> Result<(), CliError> {
    let kind = parse_kind(kind)?;
    let path = match (kind, project) {
        (Kind::Project, _) => format!("/v1/projects/{name}"),
        (k, _) if !k.namespaced() => format!("/v1/{}/{name}", kind.plural()),
        (_, Some(p)) => format!("/v1/projects/{p}/{}/{name}", kind.plural()),
        (_, None) => {
            return Err(CliError::new(
                exit::USAGE,
                format!(
                    "say which project the {kind} is in: dray delete {} {name} -p PROJECT",
                    kind.plural()
                ),
            ));
        }
    };
    let answer = client.send(Method::DELETE, &path, None).await?;
    for item in answer["deleted"].as_array().into_iter().flatten() {
        println!("{} deleted", describe(item));
    }
    Ok(())
}
