//! `loadgen`: a closed-loop HTTP/1.1 load generator with an optional rate, printing count,
//! errors, achieved rate and latency percentiles. It drives the inference benchmark, the e2e
//! client pods and the demo; it is not part of the service.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;

/// Load options.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "loadgen",
    version,
    about = "POST a JSON body to a URL, closed-loop or at a rate"
)]
pub struct LoadArgs {
    /// Target URL.
    #[arg(long, default_value = "http://127.0.0.1:8000/predict")]
    pub url: String,
    /// Total requests (ignored when --duration is set).
    #[arg(long, default_value_t = 10_000)]
    pub requests: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u64,
    /// Requests per second across all connections (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Run for this many seconds instead of a request count.
    #[arg(long)]
    pub duration: Option<f64>,
    /// JSON body to POST.
    #[arg(long, default_value = r#"{"features": [1500]}"#)]
    pub body: String,
    /// Print every reply's body on a line of its own (before the summary), so that a caller
    /// can see each reply's trace_id and request_id.
    #[arg(long)]
    pub replies: bool,
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Requests completed.
    pub count: u64,
    /// Non-2xx or failed requests.
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Latencies in microseconds.
    pub hist: Histogram<u64>,
}

impl Report {
    /// Achieved requests per second.
    pub fn rate(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The printed summary.
    pub fn render(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        let h = &self.hist;
        format!(
            "requests: {}  errors: {}  elapsed: {:.2}s  rate: {:.1} req/s\nlatency ms: min {:.3}  mean {:.3}  p50 {:.3}  p90 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3}\n",
            self.count,
            self.errors,
            self.elapsed.as_secs_f64(),
            self.rate(),
            ms(h.min()),
            h.mean() / 1000.0,
            ms(h.value_at_quantile(0.50)),
            ms(h.value_at_quantile(0.90)),
            ms(h.value_at_quantile(0.95)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max()),
        )
    }
}

/// One keep-alive HTTP/1.1 connection. A plain hyper connection per worker costs a fraction
/// of a pooled client's CPU, which matters when the generator shares two cores with the
/// service it measures.
struct Conn {
    authority: String,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    async fn post(&mut self, path: &str, body: &Bytes, print_reply: bool) -> bool {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = connect(&self.authority).await.ok();
        }
        let Some(sender) = self.sender.as_mut() else {
            return false;
        };
        if sender.ready().await.is_err() {
            self.sender = None;
            return false;
        }
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .expect("a valid request");
        match sender.send_request(req).await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                match resp.into_body().collect().await {
                    Ok(reply) if print_reply => {
                        println!("{}", String::from_utf8_lossy(&reply.to_bytes()).trim_end());
                        ok
                    }
                    Ok(_) => ok,
                    Err(_) => false,
                }
            }
            Err(_) => {
                self.sender = None;
                false
            }
        }
    }
}

async fn connect(
    authority: &str,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The `host:port` and path of an `http://` URL.
fn target(url: &str) -> anyhow::Result<(String, String)> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("--url {url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        anyhow::bail!(
            "--url must be an http:// URL (the load generator speaks plain HTTP/1.1), got {url:?}"
        );
    }
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("--url {url:?} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    Ok((format!("{host}:{port}"), path))
}

/// Runs the load.
pub async fn run(args: &LoadArgs) -> anyhow::Result<Report> {
    let (authority, path) = target(&args.url)?;
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = args
        .duration
        .map(|d| Instant::now() + Duration::from_secs_f64(d));
    let total = if deadline.is_some() {
        u64::MAX
    } else {
        args.requests
    };
    let per_worker =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (hist, done, errors, issued) =
            (hist.clone(), done.clone(), errors.clone(), issued.clone());
        let mut conn = Conn {
            authority: authority.clone(),
            sender: None,
        };
        let path = path.clone();
        let body = Bytes::from(args.body.clone());
        let print_reply = args.replies;
        workers.push(tokio::spawn(async move {
            let mut local = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut next = start
                + per_worker
                    .map(|p| p.mul_f64(w as f64 / 16.0))
                    .unwrap_or_default();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d)
                    || issued.fetch_add(1, Ordering::Relaxed) >= total
                {
                    break;
                }
                // Latency counts from the send: tokio's timer wakes a paced worker up to a
                // millisecond late, which is the generator's error, not the service's. A worker
                // that falls behind sends at once, so the rate holds.
                if let Some(p) = per_worker {
                    tokio::time::sleep_until(next.into()).await;
                    next += p;
                }
                let t = Instant::now();
                let ok = conn.post(&path, &body, print_reply).await;
                let _ = local.record(t.elapsed().as_micros().max(1) as u64);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            hist.lock().await.add(&local).expect("same bounds");
        }));
    }
    for w in workers {
        w.await?;
    }
    let hist = Arc::try_unwrap(hist)
        .map_err(|_| anyhow::anyhow!("workers still hold the histogram"))?
        .into_inner();
    Ok(Report {
        count: done.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        hist,
    })
}

fn main() -> anyhow::Result<()> {
    let args = <LoadArgs as clap::Parser>::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run(&args))?;
    print!("{}", report.render());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_plain_http_urls() {
        assert_eq!(
            target("http://127.0.0.1:8000/predict").unwrap(),
            ("127.0.0.1:8000".to_string(), "/predict".to_string())
        );
        assert_eq!(
            target("http://localhost/v2/models/m/infer?x=1").unwrap(),
            (
                "localhost:80".to_string(),
                "/v2/models/m/infer?x=1".to_string()
            )
        );
        let e = target("https://example.com/predict")
            .unwrap_err()
            .to_string();
        assert!(e.contains("http://"), "{e}");
        assert!(target("not a url").is_err());
    }
}
