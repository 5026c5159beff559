//! `integrations`: the partner-integration service and the bureau simulator.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use integrations::gateway::Gateway;
use integrations::service::{shutdown_signal, Service};
use integrations::simulator::{self, SimulatorSettings};
use integrations::Config;

#[derive(Parser)]
#[command(
    name = "integrations",
    version,
    about = "Partner bureaus within their limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve partner requests over HTTP and drain the retry queue.
    Serve {
        /// The partner configuration (TOML).
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value_t = 8090)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
    },
    /// Run the bureau simulator.
    Simulate {
        #[arg(long, default_value_t = 8091)]
        port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        host: std::net::IpAddr,
        /// Settings as JSON (see `SimulatorSettings`), e.g. '{"latency_ms": 50, "capacity": 4}'.
        /// The admin routes (`PUT /admin/settings`, `POST /stats/reset`) need the token in
        /// the `SIMULATOR_ADMIN_TOKEN` environment variable; without it they are off.
        #[arg(long)]
        settings: Option<String>,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve { config, port, host } => {
            let config = Config::load(&config)?;
            let gateway = Gateway::build(config).await?;
            let service = Service::start(gateway, SocketAddr::new(host, port))
                .await
                .context("binding the listener")?;
            tracing::info!(addr = %service.addr, "Integrations service listening.");
            shutdown_signal().await;
            tracing::info!("Shutting down: giving the jobs in hand back to the queue.");
            service.stop().await;
        }
        Command::Simulate {
            port,
            host,
            settings,
        } => {
            let settings: SimulatorSettings = match settings {
                Some(json) => serde_json::from_str(&json).context("--settings")?,
                None => SimulatorSettings::default(),
            };
            let admin = std::env::var("SIMULATOR_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
            let (addr, handle) = simulator::serve(
                SocketAddr::new(host, port),
                settings,
                admin.as_deref(),
                shutdown_signal(),
            )
            .await
            .context("binding the listener")?;
            tracing::info!(addr = %addr, "Bureau simulator listening.");
            handle.await??;
        }
    }
    Ok(())
}
