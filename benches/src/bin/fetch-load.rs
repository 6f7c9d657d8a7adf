//! A load generator that follows redirects, for what wrk cannot measure: `serve --redirect-nars`
//! answers NAR downloads with a redirect to the bucket, and the time that counts is the whole
//! download, redirect and all.
//!
//!   fetch-load BASE_URL PATHS_FILE CONNECTIONS SECONDS [HOST]
//!
//! CONNECTIONS tasks each GET `BASE_URL` + the next line of PATHS_FILE (cycling, each task
//! from its own starting line) for SECONDS, with keep-alive, following redirects, reading
//! every body to its end; HOST, if given, is sent as the `Host` header of the first request.
//! Prints one line: `requests N bytes B seconds S MiB/s M`. Any failed request is an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, paths, connections, seconds, rest @ ..] = &args[..] else {
        return Err("usage: fetch-load BASE_URL PATHS_FILE CONNECTIONS SECONDS [HOST]".into());
    };
    let paths: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(paths)?
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| format!("{base}{l}"))
            .collect(),
    );
    if paths.is_empty() {
        return Err("no paths to fetch".into());
    }
    let connections: usize = connections.parse()?;
    let duration = Duration::from_secs(seconds.parse()?);
    let host = rest.first().cloned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..connections {
            let (client, paths, host) = (client.clone(), paths.clone(), host.clone());
            let (requests, bytes) = (requests.clone(), bytes.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = t * paths.len() / connections;
                while start.elapsed() < duration {
                    let url = &paths[i % paths.len()];
                    i += 1;
                    let mut request = client.get(url);
                    if let Some(h) = &host {
                        request = request.header(reqwest::header::HOST, h);
                    }
                    let response = request.send().await?.error_for_status()?;
                    let mut body = response.bytes_stream();
                    while let Some(chunk) = body.next().await {
                        bytes.fetch_add(chunk?.len() as u64, Ordering::Relaxed);
                    }
                    requests.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<(), reqwest::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let (n, b) = (
        requests.load(Ordering::Relaxed),
        bytes.load(Ordering::Relaxed),
    );
    println!(
        "requests {n} bytes {b} seconds {secs:.2} MiB/s {:.1}",
        b as f64 / secs / (1 << 20) as f64
    );
    Ok(())
}
