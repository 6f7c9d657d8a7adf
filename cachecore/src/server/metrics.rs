//! Prometheus metrics of one server: requests, bytes, latency and errors by route.

use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every route label, for pre-registering series so a scrape shows them from the start.
pub(crate) const ROUTES: &[&str] = &[
    "cache_info",
    "narinfo",
    "nar",
    "listing",
    "log",
    "realisation",
    "landing",
    "metrics",
    "health",
    "serve_file",
    "paths",
    "other",
];

impl crate::store::layout::ObjectKind {
    /// The `route` label of requests for objects of this kind.
    pub(crate) fn label(self) -> &'static str {
        use crate::store::layout::ObjectKind as K;
        match self {
            K::CacheInfo => "cache_info",
            K::NarInfo => "narinfo",
            K::Nar => "nar",
            K::FrameDigests => "frame_digests",
            K::Listing => "listing",
            K::Log => "log",
            K::Realisation => "realisation",
            // Never served (`keys::is_served`); what requests for them would be called.
            K::GcRoot => "gcroot",
            K::GcTrash => "gctrash",
            K::Index => "index",
            K::GcLease => "gclease",
            K::Scratch => "scratch",
        }
    }
}

#[derive(Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub sent_bytes: IntCounterVec,
    pub received_bytes: IntCounterVec,
    pub errors: IntCounterVec,
    pub aborted: IntCounter,
    /// Narinfos looked for in the upstreams, by upstream and outcome: `hit` (filled from it),
    /// `miss` (it has none), `error` (unreachable, timed out, or what it sent did not check out),
    /// `skipped` (not asked: it could not be reached a moment ago).
    pub upstream: IntCounterVec,
    /// Requests waiting now for a fill from the upstreams (several may wait on one fill).
    pub upstream_waiting: IntGauge,
    /// Fills from the upstreams running now (one per narinfo asked for, however many wait).
    pub upstream_fills: IntGauge,
    /// Uploads waiting now for one of the `--upload-jobs` slots.
    pub uploads_waiting: IntGauge,
    /// Uploads holding a slot now (at most `--upload-jobs`).
    pub uploads_running: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub(crate) fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new_custom(Some("cachecore_serve".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "HTTP requests answered, by route, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from the request to its response headers, by route",
            )
            .buckets(vec![
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route"],
        )?;
        let sent_bytes = IntCounterVec::new(
            Opts::new("response_body_bytes_total", "Body bytes sent, by route"),
            &["route"],
        )?;
        let received_bytes = IntCounterVec::new(
            Opts::new(
                "upload_body_bytes_total",
                "Body bytes of uploads stored, by route",
            ),
            &["route"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "errors_total",
                "Failed requests by route and class: client (4xx), server (5xx), aborted (the store failed after the headers were sent)",
            ),
            &["route", "class"],
        )?;
        let aborted = IntCounter::new(
            "aborted_responses_total",
            "Responses whose connection was closed mid-body because the store failed",
        )?;
        let upstream = IntCounterVec::new(
            Opts::new(
                "upstream_lookups_total",
                "Narinfos missing here looked for in an upstream, by upstream and result (hit, miss, error, skipped: not asked, as it could not be reached a moment ago)",
            ),
            &["upstream", "result"],
        )?;
        let upstream_waiting = IntGauge::new(
            "upstream_waiting_requests",
            "Requests waiting now for a narinfo to be filled from the upstreams",
        )?;
        registry.register(Box::new(upstream.clone()))?;
        let upstream_fills = IntGauge::new(
            "upstream_fills_running",
            "Fills from the upstreams running now (requests for one narinfo share one fill)",
        )?;
        let uploads_waiting = IntGauge::new(
            "upload_waiting_requests",
            "Uploads waiting now for one of the --upload-jobs slots",
        )?;
        let uploads_running = IntGauge::new(
            "uploads_running",
            "Uploads holding one of the --upload-jobs slots now",
        )?;
        registry.register(Box::new(upstream_waiting.clone()))?;
        registry.register(Box::new(upstream_fills.clone()))?;
        registry.register(Box::new(uploads_waiting.clone()))?;
        registry.register(Box::new(uploads_running.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(sent_bytes.clone()))?;
        registry.register(Box::new(received_bytes.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(aborted.clone()))?;
        for r in ROUTES {
            duration.with_label_values(&[*r]);
            sent_bytes.with_label_values(&[*r]);
        }
        Ok(Metrics {
            registry,
            requests,
            duration,
            sent_bytes,
            received_bytes,
            errors,
            aborted,
            upstream,
            upstream_waiting,
            upstream_fills,
            uploads_waiting,
            uploads_running,
        })
    }

    /// Records one answered request.
    pub(crate) fn record(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[route, method, status.to_string().as_str()])
            .inc();
        self.duration.with_label_values(&[route]).observe(seconds);
        let class = match status {
            400..=499 if status != 404 && status != 304 => Some("client"),
            500..=599 => Some("server"),
            _ => None,
        };
        if let Some(class) = class {
            self.errors.with_label_values(&[route, class]).inc();
        }
    }

    /// A response cut short because the store failed mid-body.
    pub(crate) fn record_abort(&self, route: &str) {
        self.aborted.inc();
        self.errors.with_label_values(&[route, "aborted"]).inc();
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for these metric types.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// One unit of a gauge while it lasts: a request in `upstream_waiting_requests` while it waits
/// for a fill (until it is answered or its client hangs up), a fill in `upstream_fills_running`,
/// an upload in `upload_waiting_requests` or `uploads_running`.
pub(crate) struct InGauge(prometheus::IntGauge);

impl InGauge {
    pub(crate) fn start(gauge: &prometheus::IntGauge) -> InGauge {
        gauge.inc();
        InGauge(gauge.clone())
    }
}

impl Drop for InGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
