//! `kubectl modelship`: list, status (once or watching), history, promote, set-weight, abort,
//! rollback and retry for ModelDeployments, and validate for model files. Each action is a
//! spec edit (a JSON merge patch), the same a GitOps user would commit.
//! Install: put this binary on PATH (with `modelship-serving` beside it for `validate`);
//! kubectl finds it as a plugin.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use modelship_crds::ModelDeployment;
use modelship_operator::plugin;

#[derive(Parser)]
#[command(name = "kubectl modelship", version, about = "Steer ModelDeployment rollouts")]
struct Args {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every ModelDeployment with its phase, versions and weights.
    List {
        /// In every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show versions, tracks, conditions, analysis and history.
    Status {
        name: String,
        /// Print it again whenever it changes, until interrupted.
        #[arg(short, long)]
        watch: bool,
    },
    /// Every recorded rollout with when it started, was ready and finished.
    History { name: String },
    /// Promote the rollout in progress (canary weight 100, or approve the candidate).
    Promote { name: String },
    /// Set a manual canary's weight (0 to 100).
    SetWeight { name: String, weight: i32 },
    /// End the rollout in progress: back to the stable version and its model file.
    Abort { name: String },
    /// Go back to the stable version and its model file (the same edit as abort).
    Rollback { name: String },
    /// Roll out again a version the operator rolled back (approvedVersion set to it).
    Retry { name: String },
    /// Check a model file as the server would load it: `modelship-serving validate`.
    Validate {
        /// Arguments of `modelship-serving validate` (--model, --inputs, --expected, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Validate { args } = &args.command {
        return validate(args);
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `modelship-serving validate`, found beside this binary or on PATH; its exit code.
fn validate(args: &[String]) -> ExitCode {
    const SERVING: &str = "modelship-serving";
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(SERVING)))
        .filter(|path| path.is_file());
    let program = beside.unwrap_or_else(|| PathBuf::from(SERVING));
    match std::process::Command::new(&program).arg("validate").args(args).status() {
        Ok(status) => ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8)),
        Err(error) => {
            eprintln!("error: cannot run {}: {error}", program.display());
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| format!("no cluster: {e}"))?;
    let namespace = args.namespace.unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);
    let name = match &args.command {
        Command::List { all_namespaces } => {
            let api = if *all_namespaces { Api::all(client) } else { api };
            let list = api.list(&ListParams::default()).await.map_err(|e| format!("list: {e}"))?;
            print!("{}", plugin::render_list(&list.items));
            return Ok(());
        }
        Command::Validate { .. } => unreachable!("handled before connecting"),
        Command::Status { name, .. }
        | Command::History { name }
        | Command::Promote { name }
        | Command::SetWeight { name, .. }
        | Command::Abort { name }
        | Command::Rollback { name }
        | Command::Retry { name } => name.clone(),
    };
    let get = async || {
        api.get(&name).await.map_err(|e| format!("modeldeployment {namespace}/{name}: {e}"))
    };
    let md = get().await?;
    let patch = match args.command {
        Command::Status { watch: false, .. } => {
            print!("{}", plugin::render_status(&md));
            return Ok(());
        }
        Command::Status { watch: true, .. } => {
            let mut shown = String::new();
            loop {
                let text = plugin::render_status(&get().await?);
                if text != shown {
                    let now = k8s_openapi::jiff::Timestamp::now();
                    println!("--- {now:.0}");
                    print!("{text}");
                    shown = text;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Command::History { .. } => {
            print!("{}", plugin::render_history(&md));
            return Ok(());
        }
        Command::Promote { .. } => plugin::promote_patch(&md)?,
        Command::SetWeight { weight, .. } => plugin::weight_patch(&md, weight)?,
        Command::Abort { .. } => plugin::abort_patch(&md)?,
        Command::Rollback { .. } => plugin::rollback_patch(&md)?,
        Command::Retry { .. } => plugin::retry_patch(&md)?,
        Command::List { .. } | Command::Validate { .. } => unreachable!("handled above"),
    };
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("patch {namespace}/{name}: {e}"))?;
    println!("modeldeployment.modelship.io/{name} patched: {patch}");
    Ok(())
}
