//! `core-api`: read the settings, build the application, serve until Ctrl-C or SIGTERM.

use anyhow::Result;
use core_api::config::Settings;
use core_api::Application;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let app = Application::build(Settings::load()?).await?;
    println!("Credit-analysis API listening on http://{}", app.addr());
    println!(
        "Open http://{}/ in a browser to run an analysis and watch it.",
        app.addr()
    );
    if let Some(key) = &app.dev_key {
        println!("Development API key (tenant `dev`, this run only): {key}");
    }
    app.run_until(core_api::shutdown::requested()).await
}
