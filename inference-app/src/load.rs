//! `load`: a closed-loop load generator with an optional rate limit, printing count, errors,
//! achieved rate, latency percentiles and a histogram.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Mutex;

/// Load options.
#[derive(Debug, Clone, clap::Args)]
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
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
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
        let mut s = format!(
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
        );
        let bounds = [
            0.25,
            0.5,
            1.0,
            2.0,
            5.0,
            10.0,
            25.0,
            50.0,
            100.0,
            f64::INFINITY,
        ];
        let mut prev = 0u64;
        for b in bounds {
            let upto = if b.is_finite() {
                h.count_between(0, (b * 1000.0) as u64)
            } else {
                h.len()
            };
            let n = upto.saturating_sub(prev);
            prev = upto;
            let bar = "#".repeat(((n as f64 / h.len().max(1) as f64) * 50.0).round() as usize);
            let label = if b.is_finite() {
                format!("≤ {b:>6} ms")
            } else {
                "  > 100 ms".to_string()
            };
            s.push_str(&format!("  {label} {n:>9} {bar}\n"));
        }
        s
    }
}

/// Runs the load.
pub async fn run(args: &LoadArgs) -> anyhow::Result<Report> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency as usize)
        .build()?;
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
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else if let Some(d) = args.duration {
        indicatif::ProgressBar::new(d as u64).with_message("seconds")
    } else {
        indicatif::ProgressBar::new(total)
    };
    let per_worker =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (client, hist, done, errors, issued, bar) = (
            client.clone(),
            hist.clone(),
            done.clone(),
            errors.clone(),
            issued.clone(),
            bar.clone(),
        );
        let url = args.url.clone();
        let body = args.body.clone();
        let timed = deadline.is_some();
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
                if let Some(p) = per_worker {
                    tokio::time::sleep_until(next.into()).await;
                    next += p;
                }
                let t = Instant::now();
                let ok = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                let _ = local.record(t.elapsed().as_micros().max(1) as u64);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if !timed && n % 100 == 0 {
                    bar.set_position(n);
                }
            }
            hist.lock().await.add(&local).expect("same bounds");
        }));
    }
    if let Some(d) = deadline {
        while Instant::now() < d {
            tokio::time::sleep(Duration::from_millis(250)).await;
            bar.set_position(start.elapsed().as_secs());
        }
    }
    for w in workers {
        w.await?;
    }
    bar.finish_and_clear();
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
