//! Pieces the load generators and benchmark programs share: SSE stamps and percentiles for
//! the load generators, and timing one analysis to its final event, for the analysis
//! benchmarks.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;

/// Milliseconds since the Unix epoch, the clock of the events' `at` stamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What one SSE client saw: the delivery latency of every stamped event it read, and whether
/// the stream reached a final event.
pub struct Seen {
    pub latencies_ms: Vec<u64>,
    pub completed: bool,
}

/// Reads an SSE stream (after its response head) until it ends or a final event arrives, and
/// for every `"at":MS` stamp at or after `joined` records when its bytes arrived minus the
/// stamp. Only looks for the stamp's bytes, with no SSE or JSON parser, so the reader's own
/// work does not delay the clock it measures with.
pub async fn read_stamps(conn: &mut tokio::net::TcpStream, joined: u64) -> Seen {
    let mut seen = Seen {
        latencies_ms: Vec::new(),
        completed: false,
    };
    let mut buf = vec![0u8; 4096];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let arrived = now_ms();
        // Keep a short tail so a stamp split between two reads is still seen.
        carry.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&carry).into_owned();
        let mut rest = text.as_str();
        let mut consumed = 0;
        while let Some(i) = rest.find("\"at\":") {
            let digits: String = rest[i + 5..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if rest[i + 5 + digits.len()..].is_empty() {
                break; // the number may continue in the next read
            }
            if let Ok(at) = digits.parse::<u64>() {
                if at >= joined {
                    seen.latencies_ms.push(arrived.saturating_sub(at));
                }
            }
            consumed += i + 5 + digits.len();
            rest = &text[consumed..];
        }
        let done =
            text.contains("event: analysis.completed") || text.contains("event: analysis.failed");
        let keep = text.len() - consumed;
        carry.drain(..carry.len() - keep.min(64).min(carry.len()));
        if done {
            seen.completed = true;
            break;
        }
    }
    seen
}

/// The value at quantile `p` of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    sorted
        .get(((sorted.len().max(1) - 1) as f64 * p).round() as usize)
        .copied()
}

/// An `osmem-server` (the in-memory OpenSearch-compatible server from PyPI) on a free port,
/// killed when dropped: `OSMEM_SERVER_BIN`, or the one `test.sh` installs in `.venv`.
pub struct Osmem {
    child: std::process::Child,
    pub url: String,
}

impl Drop for Osmem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Osmem {
    pub fn start() -> anyhow::Result<Self> {
        use std::io::BufRead;
        let bin = match std::env::var("OSMEM_SERVER_BIN") {
            Ok(p) => std::path::PathBuf::from(p),
            Err(_) => {
                let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/lib");
                std::fs::read_dir(lib)?
                    .flatten()
                    .map(|d| d.path().join("site-packages/osmem_server/bin/osmem-server"))
                    .find(|p| p.exists())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "osmem-server not found: run ./test.sh once, or set OSMEM_SERVER_BIN"
                        )
                    })?
            }
        };
        let mut child = std::process::Command::new(bin)
            .args(["-addr", "127.0.0.1:0", "-no-stdin-watch", "-no-ja"])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let ready: serde_json::Value = serde_json::from_str(&line)?;
        let url = ready["url"].as_str().unwrap_or_default().to_string();
        Ok(Osmem { child, url })
    }
}

/// The first command-line argument as a number of runs, or `default`.
pub fn runs_arg(default: usize) -> Result<usize> {
    Ok(std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()
        .context("the first argument is a number of runs")?
        .unwrap_or(default))
}

/// What one analysis came to on its SSE stream.
pub struct Timed {
    /// From before `POST /v1/analyses` to the arrival of `analysis.completed`.
    pub elapsed: Duration,
    /// `classification.progress` events seen (movement pages).
    pub pages: u32,
    /// The summary's `transactions`.
    pub transactions: u64,
}

/// Starts an analysis of `cpf` at the service `url` with API key `key` and times it to its
/// `analysis.completed` (an `analysis.failed` is an error).
pub async fn analyse(http: &reqwest::Client, url: &str, key: &str, cpf: &str) -> Result<Timed> {
    let started = Instant::now();
    let r: serde_json::Value = http
        .post(format!("{url}/v1/analyses"))
        .bearer_auth(key)
        .json(&serde_json::json!({ "cpf": cpf }))
        .send()
        .await?
        .json()
        .await?;
    let events_url = r["events_url"].as_str().context("events_url")?;
    let mut stream = http
        .get(format!("{url}{events_url}"))
        .send()
        .await?
        .bytes_stream()
        .eventsource();
    let mut pages = 0;
    while let Some(e) = tokio::time::timeout(Duration::from_secs(30), stream.next()).await? {
        let e = e?;
        match e.event.as_str() {
            "classification.progress" => pages += 1,
            "analysis.completed" => {
                let d: serde_json::Value = serde_json::from_str(&e.data)?;
                return Ok(Timed {
                    elapsed: started.elapsed(),
                    pages,
                    transactions: d["summary"]["transactions"].as_u64().unwrap_or(0),
                });
            }
            "analysis.failed" => anyhow::bail!("analysis failed: {}", e.data),
            _ => {}
        }
    }
    anyhow::bail!("the stream ended without analysis.completed")
}
