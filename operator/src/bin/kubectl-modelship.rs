//! `kubectl modelship`: status, promote, set-weight and rollback for ModelDeployments.
//! Each action is a spec edit (a JSON merge patch), the same a GitOps user would commit.
//! Install: put this binary on PATH; kubectl finds it as a plugin.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::api::{Patch, PatchParams};
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
    /// Show versions, tracks, conditions, analysis and history.
    Status { name: String },
    /// Promote the rollout in progress (canary weight 100, or approve the candidate).
    Promote { name: String },
    /// Set a manual canary's weight (0 to 100).
    SetWeight { name: String, weight: i32 },
    /// Go back to the stable version and its model file.
    Rollback { name: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let client = Client::try_default().await.map_err(|e| format!("no cluster: {e}"))?;
    let namespace = args.namespace.unwrap_or_else(|| client.default_namespace().to_string());
    let api: Api<ModelDeployment> = Api::namespaced(client, &namespace);
    let name = match &args.command {
        Command::Status { name }
        | Command::Promote { name }
        | Command::SetWeight { name, .. }
        | Command::Rollback { name } => name.clone(),
    };
    let md =
        api.get(&name).await.map_err(|e| format!("modeldeployment {namespace}/{name}: {e}"))?;
    let patch = match args.command {
        Command::Status { .. } => {
            print!("{}", plugin::render_status(&md));
            return Ok(());
        }
        Command::Promote { .. } => plugin::promote_patch(&md)?,
        Command::SetWeight { weight, .. } => plugin::weight_patch(&md, weight)?,
        Command::Rollback { .. } => plugin::rollback_patch(&md)?,
    };
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("patch {namespace}/{name}: {e}"))?;
    println!("modeldeployment.modelship.io/{name} patched: {patch}");
    Ok(())
}
