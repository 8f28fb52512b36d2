//! `kotel-operator`: `run` (the default) runs the operator; `crds` prints the CRD YAML.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use kotel_operator::{controller, http, leader, metrics::Metrics, telemetry};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "kotel-operator",
    version,
    about = "Injects and manages OpenTelemetry for Kubernetes workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (the default).
    Run,
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(
        long,
        global = true,
        env = "KOTEL_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    http_addr: SocketAddr,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "KOTEL_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    log_format: telemetry::LogFormat,
    /// Namespace of the leader-election Lease.
    #[arg(long, global = true, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, global = true, env = "POD_NAME")]
    identity: Option<String>,
    /// Compete for the Lease before reconciling; disable only when exactly one replica runs.
    #[arg(long, global = true, env = "KOTEL_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
}

fn main() -> anyhow::Result<()> {
    // The OTLP exporter's HTTP client may be built with rustls and no provider of its own
    // (when the workspace is built together with the inference app): give it ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crds) => {
            print!("{}", kotel_operator::crds_yaml());
            Ok(())
        }
        Some(Command::Run) | None => run(cli.run),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn terminated() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let _telemetry = telemetry::init(args.log_format)?;
        let identity = args.identity.clone().unwrap_or_else(|| {
            format!("kotel-{}", std::process::id())
        });
        info!(identity = %identity, version = env!("CARGO_PKG_VERSION"), "starting kotel-operator");
        let metrics = Metrics::default();
        let client = kotel_operator::api_client::client(metrics.api.clone()).await?;

        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let crds_found = Arc::new(AtomicBool::new(false));
        let synced = Arc::new(AtomicBool::new(false));
        let is_leader = Arc::new(AtomicBool::new(!args.leader_election));
        let state = http::State {
            registry: Arc::new(registry),
            crds: crds_found.clone(),
            synced: synced.clone(),
            leader: is_leader.clone(),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind(args.http_addr).await?;
        info!(addr = %listener.local_addr()?, "serving /metrics, /healthz, /readyz");
        let mut http_stop = stop_rx.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, http::router(state))
                .with_graceful_shutdown(async move {
                    let _ = http_stop.wait_for(|s| *s).await;
                })
                .await
        });
        tokio::spawn(async move {
            terminated().await;
            info!("shutting down");
            let _ = stop_tx.send(true);
        });

        let stopped = {
            let rx = stop_rx.clone();
            move || {
                let mut rx = rx.clone();
                async move {
                    let _ = rx.wait_for(|s| *s).await;
                }
            }
        };

        tokio::select! {
            r = controller::wait_for_crds(&client) => r?,
            _ = stopped() => return Ok(()),
        }
        crds_found.store(true, Ordering::SeqCst);

        let mut election = None;
        if args.leader_election {
            let (mut rx, task) = leader::elect(client.clone(), &args.lease_namespace, &identity).await?;
            info!(lease = leader::LEASE_NAME, namespace = %args.lease_namespace, "waiting for leadership");
            tokio::select! {
                r = rx.wait_for(|l| *l) => { r?; }
                _ = stopped() => return Ok(()),
            }
            is_leader.store(true, Ordering::SeqCst);
            info!("acquired leadership");
            election = Some((rx, task));
        }

        let lost = {
            let mut rx = election.as_ref().map(|(rx, _)| rx.clone());
            async move {
                match rx.as_mut() {
                    Some(rx) => {
                        let _ = rx.wait_for(|l| !*l).await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
        };
        let (lost_tx, lost_rx) = watch::channel(false);
        let shutdown = {
            let stop = stopped();
            let mut lost_rx = lost_rx.clone();
            async move {
                tokio::select! {
                    _ = stop => {}
                    _ = lost_rx.wait_for(|l| *l) => {}
                }
            }
        };
        let watch_lost = tokio::spawn(async move {
            lost.await;
            let _ = lost_tx.send(true);
        });
        controller::run(client, identity, metrics, synced, shutdown).await?;
        watch_lost.abort();
        let lost_leadership = *lost_rx.borrow();
        is_leader.store(false, Ordering::SeqCst);
        if let Some((rx, task)) = election {
            drop(rx);
            let _ = task.await;
        }
        let _ = server.await;
        if lost_leadership {
            error!("lost leadership; exiting so that a restart competes again");
            anyhow::bail!("lost leadership");
        }
        info!("stopped");
        Ok(())
    })
}
