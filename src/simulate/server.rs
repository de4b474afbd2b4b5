//! The simulator's HTTP side: routing by ARM path (case-insensitive, like ARM), auth, api-version
//! checks, rate limits, faults, and the handlers. Two listeners: the management host (ARM + token
//! endpoints) and a blob host for signed links, so tests can see which host got which header.

// Handlers return `Result<_, Response>` to answer early with an ARM error; the size is irrelevant here.
#![allow(clippy::result_large_err)]

use super::generator::{Totals, World, guid, h3, month_end, next_month};
use super::wire::{self, UsageFields};
use super::{
    Counters, FaultKind, FaultPlan, InvoiceDates, SimConfig, SimError, SimFamily, Simulator,
};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{Datelike, NaiveDate, Utc};
use hmac::{Hmac, Mac};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) struct FaultState {
    pub plan: FaultPlan,
    rng: u64,
}

enum OpKind {
    PriceSheet { profile: usize, zip: bool },
    CostDetails { inv: usize, customer: Option<usize> },
}

struct Op {
    kind: OpKind,
    ready_at: Instant,
    location: String,
    blob_sizes: Option<Vec<(u64, u64, u64)>>,
}

struct Budget {
    etag: u64,
    body: Value,
}

pub(super) struct State {
    pub world: World,
    pub config: SimConfig,
    pub counters: Mutex<Counters>,
    pub faults: Mutex<FaultState>,
    pub open_version: AtomicU64,
    tokens: Mutex<HashMap<String, chrono::DateTime<Utc>>>,
    issued: Mutex<Vec<String>>,
    totals: Mutex<HashMap<(usize, u64), Totals>>,
    ops: Mutex<HashMap<String, Op>>,
    policies: Mutex<HashMap<usize, String>>,
    budgets: Mutex<BTreeMap<(String, String), Budget>>,
    limiter: Mutex<HashMap<(usize, String), VecDeque<Instant>>>,
    key: [u8; 32],
    arm_base: String,
    blob_base: String,
}

impl State {
    pub fn secrets(&self) -> Vec<String> {
        let mut v = vec![
            self.config.client_secret.clone(),
            self.config.federated_assertion.clone(),
            self.config.identity_header.clone(),
        ];
        v.extend(self.issued.lock().map(|i| i.clone()).unwrap_or_default());
        v
    }
    fn count(&self, f: impl FnOnce(&mut Counters)) {
        if let Ok(mut c) = self.counters.lock() {
            f(&mut c);
        }
    }
    fn scaled(&self, simulated_secs: f64) -> Duration {
        Duration::from_secs_f64((simulated_secs / self.config.time_scale.max(1e-6)).max(0.0))
    }
    fn totals(&self, inv: usize, version: u64) -> Totals {
        if let Some(t) = self
            .totals
            .lock()
            .ok()
            .and_then(|t| t.get(&(inv, version)).cloned())
        {
            return t;
        }
        let t = self.world.totals(inv, version);
        if let Ok(mut c) = self.totals.lock() {
            c.insert((inv, version), t.clone());
        }
        t
    }
    fn sign(&self, path: &str, expiry: i64) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable_mac());
        mac.update(path.as_bytes());
        mac.update(&expiry.to_le_bytes());
        base64::engine::general_purpose::STANDARD.encode(&mac.finalize().into_bytes()[..18])
    }
    fn signed_link(&self, path: &str) -> String {
        let expiry = (Utc::now()
            + chrono::Duration::from_std(self.config.link_lifetime).unwrap_or_default())
        .timestamp();
        let sig = self.sign(path, expiry);
        if let Ok(mut i) = self.issued.lock() {
            i.push(sig.clone());
        }
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("sv", "2020-05-31")
            .append_pair("sr", "b")
            .append_pair("sp", "r")
            .append_pair("se", &expiry.to_string())
            .append_pair("sig", &sig);
        format!(
            "{}{}?{}",
            self.blob_base,
            path.trim_start_matches('/'),
            q.finish()
        )
    }
    fn skiptoken(&self, scope: &str, offset: u64) -> String {
        let payload = format!("{offset}:{}", self.sign(scope, offset as i64));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
    }
    fn read_skiptoken(&self, scope: &str, token: &str) -> Option<u64> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim())
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (off, mac) = text.split_once(':')?;
        let off: u64 = off.parse().ok()?;
        (self.sign(scope, off as i64) == mac).then_some(off)
    }
}

fn unreachable_mac() -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this is never reached.
    match <Hmac<Sha256> as Mac>::new_from_slice(b"k") {
        Ok(m) => m,
        Err(_) => std::process::abort(),
    }
}

pub(super) async fn start(config: SimConfig) -> Result<Simulator, SimError> {
    let arm = tokio::net::TcpListener::bind(("127.0.0.1", config.arm_port))
        .await
        .map_err(|e| SimError::Bind {
            addr: format!("127.0.0.1:{}", config.arm_port),
            source: e,
        })?;
    let blob = tokio::net::TcpListener::bind(("127.0.0.1", config.blob_port))
        .await
        .map_err(|e| SimError::Bind {
            addr: format!("127.0.0.1:{}", config.blob_port),
            source: e,
        })?;
    let arm_addr = arm.local_addr().map_err(|e| SimError::Bind {
        addr: "arm".into(),
        source: e,
    })?;
    let blob_addr = blob.local_addr().map_err(|e| SimError::Bind {
        addr: "blob".into(),
        source: e,
    })?;
    let world = World::new(config.seed, config.scale.clone(), config.open_month);
    let mut key = [0u8; 32];
    for (i, k) in key.iter_mut().enumerate() {
        // From the seed, so skip tokens and links stay valid across a restart of the same world.
        *k = (h3(config.seed, 0xB10B, i as u64) & 0xff) as u8;
    }
    let policies = world
        .customers
        .iter()
        .enumerate()
        .map(|(i, _)| {
            (
                i,
                if i % 3 == 2 { "NotAllowed" } else { "Allowed" }.to_owned(),
            )
        })
        .collect();
    let state = Arc::new(State {
        faults: Mutex::new(FaultState {
            rng: config.faults.seed,
            plan: config.faults.clone(),
        }),
        world,
        counters: Mutex::default(),
        open_version: AtomicU64::new(0),
        tokens: Mutex::default(),
        issued: Mutex::default(),
        totals: Mutex::default(),
        ops: Mutex::default(),
        policies: Mutex::new(policies),
        budgets: Mutex::default(),
        limiter: Mutex::default(),
        key,
        arm_base: format!("http://{arm_addr}/"),
        blob_base: format!("http://{blob_addr}/"),
        config,
    });
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve(arm, state.clone(), false, rx.clone()));
    tokio::spawn(serve(blob, state.clone(), true, rx));
    tracing::info!(arm = %arm_addr, blob = %blob_addr, "simulator listening");
    Ok(Simulator {
        state,
        arm_addr,
        blob_addr,
        shutdown: tx,
    })
}

async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    blob: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        let _ = stream.set_nodelay(true);
        // Abortive close: a connection the server drops is reset (RST), which is what `reset` faults need.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        let st = state.clone();
        let mut stop2 = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let st = st.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(st, req, blob).await) }
            });
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let fut = conn.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = fut => {},
                _ = stop2.changed() => {},
            }
        });
    }
}

/// A request, decoded once.
struct Ctx {
    method: Method,
    segs: Vec<String>,
    low: Vec<String>,
    query: HashMap<String, String>,
    raw_query: String,
    headers: HeaderMap,
    body: Bytes,
    path: String,
}

impl Ctx {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(&k.to_ascii_lowercase()).map(String::as_str)
    }
    /// Absolute URL of this request with `$skiptoken` replaced.
    fn next_link(&self, base: &str, token: &str) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(self.raw_query.as_bytes()) {
            if !k.eq_ignore_ascii_case("$skiptoken") {
                q.append_pair(&k, &v);
            }
        }
        q.append_pair("$skiptoken", token);
        format!(
            "{}{}?{}",
            base,
            self.path.trim_start_matches('/'),
            q.finish()
        )
    }
}

type Resp = Response<Body>;

fn json_resp(status: StatusCode, body: String) -> Resp {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Resp {
    json_resp(
        status,
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

fn header(r: &mut Resp, k: &'static str, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        r.headers_mut().insert(k, v);
    }
}

async fn handle(st: Arc<State>, req: Request<hyper::body::Incoming>, blob_host: bool) -> Resp {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "unreadable request body",
            );
        }
    };
    let path = parts.uri.path().to_owned();
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let low = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let raw_query = parts.uri.query().unwrap_or("").to_owned();
    let query = url::form_urlencoded::parse(raw_query.as_bytes())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    let ctx = Ctx {
        method: parts.method,
        segs,
        low,
        query,
        raw_query,
        headers: parts.headers,
        body,
        path,
    };
    let family = if blob_host {
        SimFamily::Blob
    } else {
        classify(&ctx)
    };
    st.count(|c| *c.requests.entry(family).or_default() += 1);
    if !st.config.latency.is_zero() {
        tokio::time::sleep(st.config.latency).await;
    }
    if blob_host && ctx.headers.contains_key("authorization") {
        st.count(|c| c.blob_requests_with_authorization += 1);
    }
    // Logged without the query: it may hold a signature.
    tracing::trace!(method = %ctx.method, path = %ctx.path, family = family.name(), "sim request");

    let needs_auth = !blob_host
        && !matches!(family, SimFamily::Token)
        && !ctx
            .low
            .first()
            .is_some_and(|s| s == "msi" || s == "metadata");
    if needs_auth && let Err(r) = check_auth(&st, &ctx) {
        st.count(|c| c.unauthorized += 1);
        return r;
    }
    if let Some(r) = rate_limit(&st, &ctx, family) {
        return r;
    }
    let fault = pick_fault(&st, family);
    if let Some(kind) = fault {
        st.count(|c| {
            *c.injected
                .entry(format!("{}/{}", family.name(), kind.name()))
                .or_default() += 1
        });
        let secs = st
            .faults
            .lock()
            .map(|f| f.plan.retry_after_secs)
            .unwrap_or(1)
            .to_string();
        let throttled = |h: &'static str| {
            let mut r = arm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests. Please retry.",
            );
            header(&mut r, h, &secs);
            r
        };
        match kind {
            FaultKind::ThrottleRetryAfter => return throttled("retry-after"),
            FaultKind::ThrottleConsumption => {
                return throttled("x-ms-ratelimit-microsoft.consumption-retry-after");
            }
            FaultKind::ThrottleQpu => {
                return throttled("x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after");
            }
            FaultKind::ThrottleEntity => {
                return throttled("x-ms-ratelimit-microsoft.costmanagement-entity-retry-after");
            }
            FaultKind::ThrottleTenant => {
                return throttled("x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after");
            }
            FaultKind::Http503 => {
                let mut r = arm_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "The service is temporarily unavailable.",
                );
                header(&mut r, "retry-after", "0");
                return r;
            }
            FaultKind::Http500 => {
                return arm_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "Encountered internal server error.",
                );
            }
            FaultKind::Reset => return reset_response(),
            FaultKind::ExpiredLink => {
                return Response::builder()
                    .status(StatusCode::FORBIDDEN)
                    .header("content-type", "application/xml")
                    .body(Body::from("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Signed expiry time has to be after signed start time.</Message></Error>"))
                    .unwrap_or_else(|_| reset_response());
            }
            FaultKind::TokenExpiry => {
                if let Some(t) = bearer(&ctx)
                    && let Ok(mut toks) = st.tokens.lock()
                {
                    toks.insert(t, Utc::now() - chrono::Duration::seconds(1));
                }
                return arm_error(
                    StatusCode::UNAUTHORIZED,
                    "ExpiredAuthenticationToken",
                    "The access token expiry UTC time is earlier than current UTC time.",
                );
            }
            FaultKind::Stall | FaultKind::Truncated | FaultKind::InvalidJson => {}
        }
    }
    let resp = if blob_host {
        blob(&st, &ctx)
    } else {
        route(&st, &ctx, family)
    };
    match fault {
        Some(FaultKind::Stall) => {
            stall(
                resp,
                st.faults
                    .lock()
                    .map(|f| f.plan.stall)
                    .unwrap_or(Duration::from_secs(30)),
            )
            .await
        }
        Some(FaultKind::Truncated) => truncate(resp).await,
        Some(FaultKind::InvalidJson) => invalid_json(resp).await,
        _ => resp,
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

fn reset_response() -> Resp {
    let stream = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset",
        ))
    });
    Response::new(Body::from_stream(stream))
}

async fn body_bytes(resp: Resp) -> (axum::http::response::Parts, Bytes) {
    use http_body_util::BodyExt;
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (parts, bytes)
}

async fn stall(resp: Resp, for_: Duration) -> Resp {
    let (mut parts, bytes) = body_bytes(resp).await;
    let half = bytes.len() / 2;
    let (a, b) = (bytes.slice(..half), bytes.slice(half..));
    parts
        .headers
        .insert("content-length", HeaderValue::from(bytes.len()));
    let s = futures::stream::iter(vec![Ok::<_, std::io::Error>(a)]).chain(futures::stream::once(
        async move {
            tokio::time::sleep(for_).await;
            Ok(b)
        },
    ));
    Response::from_parts(parts, Body::from_stream(s))
}

use futures::StreamExt as _;

async fn truncate(resp: Resp) -> Resp {
    let (mut parts, bytes) = body_bytes(resp).await;
    let half = bytes.slice(..bytes.len() / 2);
    parts
        .headers
        .insert("content-length", HeaderValue::from(bytes.len().max(1)));
    let s = futures::stream::iter(vec![
        Ok::<_, std::io::Error>(half),
        Err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "injected truncation",
        )),
    ]);
    Response::from_parts(parts, Body::from_stream(s))
}

async fn invalid_json(resp: Resp) -> Resp {
    let (mut parts, bytes) = body_bytes(resp).await;
    if bytes.is_empty() || parts.status != StatusCode::OK {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let cut = Bytes::copy_from_slice(&bytes[..bytes.len() * 2 / 3]);
    parts.status = StatusCode::OK;
    parts
        .headers
        .insert("content-length", HeaderValue::from(cut.len()));
    Response::from_parts(parts, Body::from(cut))
}

fn pick_fault(st: &State, family: SimFamily) -> Option<FaultKind> {
    let mut f = st.faults.lock().ok()?;
    let rate = f.plan.rates.get(&family).copied().unwrap_or(0.0);
    if rate <= 0.0 {
        return None;
    }
    f.rng = super::generator::mix(f.rng);
    let roll = (f.rng >> 11) as f64 / (1u64 << 53) as f64;
    if roll >= rate {
        return None;
    }
    let kinds: Vec<FaultKind> = f
        .plan
        .kinds
        .iter()
        .copied()
        .filter(|k| k.applies_to(family))
        .collect();
    if kinds.is_empty() {
        return None;
    }
    f.rng = super::generator::mix(f.rng);
    Some(kinds[(f.rng % kinds.len() as u64) as usize])
}

fn bearer(ctx: &Ctx) -> Option<String> {
    let h = ctx.headers.get("authorization")?.to_str().ok()?;
    h.strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .map(|t| t.trim().to_owned())
}

fn check_auth(st: &State, ctx: &Ctx) -> Result<(), Resp> {
    let Some(t) = bearer(ctx) else {
        return Err(arm_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ));
    };
    let exp = st.tokens.lock().ok().and_then(|m| m.get(&t).copied());
    match exp {
        None => Err(arm_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        )),
        Some(e) if e <= Utc::now() => Err(arm_error(
            StatusCode::UNAUTHORIZED,
            "ExpiredAuthenticationToken",
            "The access token expiry UTC time is earlier than current UTC time.",
        )),
        Some(_) => Ok(()),
    }
}

/// Which family a management-host request belongs to.
fn classify(ctx: &Ctx) -> SimFamily {
    let l = &ctx.low;
    let has = |s: &str| l.iter().any(|x| x == s);
    if l.len() == 4 && l[1] == "oauth2" || l.first().is_some_and(|s| s == "msi" || s == "metadata")
    {
        SimFamily::Token
    } else if has("usagedetails") {
        SimFamily::Usage
    } else if has("pricesheet") || has("pricesheets") || (has("operationresults")) {
        SimFamily::PriceSheet
    } else if has("generatecostdetailsreport") || has("costdetailsoperationresults") {
        SimFamily::CostDetails
    } else if has("query") {
        SimFamily::Query
    } else if has("budgets") {
        SimFamily::Budgets
    } else if has("policies") {
        SimFamily::Policy
    } else {
        SimFamily::Billing
    }
}

/// Server-side enforcement of Azure's documented limits, on the simulated clock.
fn rate_limit(st: &State, ctx: &Ctx, family: SimFamily) -> Option<Resp> {
    if !st.config.enforce_limits {
        return None;
    }
    let ba = ctx
        .low
        .iter()
        .position(|s| s == "billingaccounts")
        .and_then(|i| ctx.low.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let scope = ctx.low.iter().position(|s| s == "providers").map(|_| {
        let last = ctx.low.iter().rposition(|s| s == "providers").unwrap_or(0);
        ctx.low[..last].join("/")
    });
    let scope = scope.unwrap_or_default();
    const MIN: f64 = 60.0;
    // (rule id, key, limit, window in simulated seconds, header)
    let rules: Vec<(usize, String, usize, f64, &'static str)> = match family {
        SimFamily::Usage => vec![
            (
                0,
                ba.clone(),
                6,
                MIN,
                "x-ms-ratelimit-microsoft.consumption-retry-after",
            ),
            (
                1,
                format!("{}?{}", ctx.path.to_ascii_lowercase(), ctx.raw_query),
                2,
                MIN,
                "x-ms-ratelimit-microsoft.consumption-retry-after",
            ),
        ],
        SimFamily::PriceSheet => vec![(2, ba.clone(), 30, MIN, "retry-after")],
        SimFamily::CostDetails => vec![
            (
                3,
                scope.clone(),
                2,
                MIN,
                "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after",
            ),
            (
                4,
                scope.clone(),
                10,
                3600.0,
                "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after",
            ),
            (
                5,
                scope.clone(),
                50,
                86_400.0,
                "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after",
            ),
            (
                6,
                ba.clone(),
                5,
                MIN,
                "x-ms-ratelimit-microsoft.costmanagement-entity-retry-after",
            ),
            (
                7,
                String::new(),
                30,
                MIN,
                "x-ms-ratelimit-microsoft.costmanagement-tenant-retry-after",
            ),
        ],
        SimFamily::Query => vec![
            (
                8,
                String::new(),
                12,
                10.0,
                "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after",
            ),
            (
                9,
                String::new(),
                60,
                MIN,
                "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after",
            ),
            (
                10,
                String::new(),
                600,
                3600.0,
                "x-ms-ratelimit-microsoft.costmanagement-qpu-retry-after",
            ),
        ],
        _ => vec![],
    };
    if rules.is_empty() {
        return None;
    }
    let now = Instant::now();
    let mut log = st.limiter.lock().ok()?;
    let mut worst: Option<(Duration, &'static str, String)> = None;
    for (id, key, limit, window, h) in &rules {
        let w = st.scaled(*window);
        let q = log.entry((*id, key.clone())).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= w) {
            q.pop_front();
        }
        if q.len() >= *limit {
            let wait = q
                .front()
                .map(|t| w.saturating_sub(now.duration_since(*t)))
                .unwrap_or(w);
            if worst.as_ref().is_none_or(|(d, _, _)| wait > *d) {
                worst = Some((wait, h, key.clone()));
            }
        }
    }
    if let Some((wait, h, key)) = worst {
        drop(log);
        st.count(|c| {
            *c.rate_limited
                .entry(format!("{} {}", family.name(), key))
                .or_default() += 1
        });
        let mut r = arm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequests",
            "The rate limit for this scope has been reached; retry after the time given.",
        );
        header(&mut r, h, &wait.as_secs().to_string());
        if h != "retry-after" {
            header(&mut r, "retry-after", &wait.as_secs().to_string());
        }
        header(
            &mut r,
            "retry-after-ms",
            &wait.as_millis().max(1).to_string(),
        );
        return Some(r);
    }
    for (id, key, ..) in rules {
        log.entry((id, key)).or_default().push_back(now);
    }
    None
}

fn api_version_ok(ctx: &Ctx, allowed: &[&str]) -> Result<String, Resp> {
    match ctx.q("api-version") {
        None => Err(arm_error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )),
        Some(v) if allowed.iter().any(|a| a.eq_ignore_ascii_case(v)) => Ok(v.to_owned()),
        Some(v) => Err(arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidApiVersionParameter",
            &format!(
                "The api-version '{v}' is invalid. The supported versions are '{}'.",
                allowed.join(",")
            ),
        )),
    }
}

macro_rules! api {
    ($ctx:expr, $($v:expr),+) => {
        match api_version_ok($ctx, &[$($v),+]) {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

const BILLING: &str = "2019-10-01-preview";

fn route(st: &State, ctx: &Ctx, family: SimFamily) -> Resp {
    let l: Vec<&str> = ctx.low.iter().map(String::as_str).collect();
    let m = &ctx.method;
    let w = &st.world;
    // Token endpoints.
    match (m, l.as_slice()) {
        (&Method::POST, [_, "oauth2", "v2.0", "token"]) => return token(st, ctx),
        (&Method::GET, ["msi", "token"])
        | (&Method::GET, ["metadata", "identity", "oauth2", "token"]) => {
            return managed_identity(st, ctx);
        }
        _ => {}
    }
    // Operation results that live outside a billing account.
    if let (&Method::GET, ["providers", "microsoft.billing", "operationresults", id]) =
        (m, l.as_slice())
    {
        return poll_op(st, ctx, id);
    }
    let Some(rest) = l.strip_prefix(&["providers", "microsoft.billing", "billingaccounts"]) else {
        return not_found(ctx);
    };
    if rest.is_empty() {
        let _ = api!(ctx, BILLING, "2020-05-01", "2024-04-01");
        return list_page(st, ctx, "accounts", vec![account_json(w)]);
    }
    if !rest[0].eq_ignore_ascii_case(&w.account_name) {
        return arm_error(
            StatusCode::NOT_FOUND,
            "BillingAccountNotFound",
            &format!("Billing account '{}' was not found.", ctx.segs[3]),
        );
    }
    let rest = &rest[1..];
    let profile_of = |name: &str| {
        w.profiles
            .iter()
            .position(|p| p.name.eq_ignore_ascii_case(name))
    };
    let customer_of = |id: &str| {
        w.customers
            .iter()
            .position(|c| c.id.eq_ignore_ascii_case(id))
    };
    let _ = family;
    match (m, rest) {
        (&Method::GET, []) => {
            let _ = api!(ctx, BILLING);
            json_resp(StatusCode::OK, account_json(w))
        }
        (&Method::GET, ["billingprofiles"]) => {
            let _ = api!(ctx, BILLING);
            let items = (0..w.profiles.len()).map(|p| profile_json(w, p)).collect();
            list_page(st, ctx, "profiles", items)
        }
        (&Method::GET, ["customers"]) => {
            let _ = api!(ctx, BILLING, "2018-11-01-preview");
            list_page_with(st, ctx, "customers", w.customers.len(), |c| {
                customer_json(w, c)
            })
        }
        (&Method::GET, ["billingsubscriptions"]) => {
            let _ = api!(ctx, BILLING);
            list_page_with(st, ctx, "subs", w.subs.len(), |s| subscription_json(w, s))
        }
        (&Method::GET, ["customers", c, "billingsubscriptions"]) => {
            let _ = api!(ctx, BILLING);
            let Some(ci) = customer_of(c) else {
                return not_found(ctx);
            };
            let items = (0..w.subs.len())
                .filter(|s| w.subs[*s].customer == ci)
                .map(|s| subscription_json(w, s))
                .collect();
            list_page(st, ctx, &format!("subs-{ci}"), items)
        }
        (&Method::GET, ["invoices"]) => invoices(st, ctx),
        (m2, ["customers", c, "policies", "default"]) if m2 == Method::GET || m2 == Method::PUT => {
            let _ = api!(ctx, BILLING);
            let Some(ci) = customer_of(c) else {
                return not_found(ctx);
            };
            policy(st, ctx, ci)
        }
        (
            &Method::GET,
            [
                "billingprofiles",
                bp,
                "invoices",
                inv,
                "providers",
                "microsoft.consumption",
                "usagedetails",
            ],
        ) => {
            let v = api!(ctx, "2019-10-01", "2023-03-01", "2024-08-01");
            let Some(p) = profile_of(bp) else {
                return not_found(ctx);
            };
            let Some(i) = w
                .invoices
                .iter()
                .position(|x| x.profile == p && x.name.eq_ignore_ascii_case(inv))
            else {
                return arm_error(
                    StatusCode::NOT_FOUND,
                    "InvoiceNotFound",
                    &format!("Invoice '{inv}' was not found."),
                );
            };
            usage(st, ctx, &v, i, None)
        }
        (
            &Method::GET,
            [
                "billingprofiles",
                bp,
                "providers",
                "microsoft.consumption",
                "usagedetails",
            ],
        ) => {
            let v = api!(ctx, "2019-10-01", "2023-03-01", "2024-08-01");
            let Some(p) = profile_of(bp) else {
                return not_found(ctx);
            };
            let (Some(from), Some(to)) = (
                ctx.q("startDate").and_then(date_iso),
                ctx.q("endDate").and_then(date_iso),
            ) else {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "startDate and endDate (YYYY-MM-DD) are required at billing profile scope.",
                );
            };
            let month = from.with_day(1).unwrap_or(from);
            if to < from || to > month_end(month) {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "The date range must lie within one month.",
                );
            }
            let inv = if month == w.open_month {
                Some(w.invoices.len() + p)
            } else {
                w.invoices
                    .iter()
                    .position(|x| x.profile == p && x.month == month)
            };
            match inv {
                Some(i) => usage(st, ctx, &v, i, Some((from, to))),
                None => usage_empty(&v),
            }
        }
        (&Method::POST, ["billingprofiles", bp, "pricesheet", "default", "download"]) => {
            let _ = api!(ctx, BILLING);
            let Some(p) = profile_of(bp) else {
                return not_found(ctx);
            };
            if ctx
                .q("format")
                .is_some_and(|f| !f.eq_ignore_ascii_case("csv"))
            {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidFormat",
                    "format must be csv.",
                );
            }
            let id = guid(rand::random());
            let location = format!(
                "{}providers/Microsoft.Billing/operationResults/{id}?api-version=2018-07-31",
                st.arm_base
            );
            start_op(
                st,
                id,
                OpKind::PriceSheet {
                    profile: p,
                    zip: false,
                },
                location,
            )
        }
        (
            &Method::POST,
            [
                "billingprofiles",
                bp,
                "providers",
                "microsoft.costmanagement",
                "pricesheets",
                "default",
                "download",
            ],
        ) => {
            let _ = api!(ctx, "2023-03-01", "2023-09-01", "2023-11-01", "2024-08-01");
            let Some(p) = profile_of(bp) else {
                return not_found(ctx);
            };
            let id = guid(rand::random());
            let location = format!(
                "{}providers/Microsoft.Billing/billingAccounts/{}/billingProfiles/{}/providers/Microsoft.CostManagement/operationResults/{id}?sessiontoken=0:{}&api-version=2024-08-01&OperationType=PriceSheet",
                st.arm_base,
                w.account_name,
                enc(&w.profiles[p].name),
                rand::random::<u32>() % 1_000_000
            );
            start_op(
                st,
                id,
                OpKind::PriceSheet {
                    profile: p,
                    zip: true,
                },
                location,
            )
        }
        (
            &Method::GET,
            [
                "billingprofiles",
                _bp,
                "providers",
                "microsoft.costmanagement",
                "operationresults",
                id,
            ],
        ) => poll_op(st, ctx, id),
        (
            &Method::POST,
            [
                scope @ ..,
                "providers",
                "microsoft.costmanagement",
                "generatecostdetailsreport",
            ],
        ) => cost_details(st, ctx, scope),
        (
            &Method::GET,
            [
                _scope @ ..,
                "providers",
                "microsoft.costmanagement",
                "costdetailsoperationresults",
                id,
            ],
        ) => {
            let _ = api!(
                ctx,
                "2022-05-01",
                "2023-03-01",
                "2023-08-01",
                "2023-11-01",
                "2024-08-01"
            );
            poll_op(st, ctx, id)
        }
        (&Method::POST, [scope @ .., "providers", "microsoft.costmanagement", "query"]) => {
            query(st, ctx, scope)
        }
        (
            m2,
            [
                "providers",
                "microsoft.costmanagement",
                "budgets",
                rest2 @ ..,
            ],
        ) => {
            let _ = api!(ctx, "2019-10-01", "2023-11-01", "2024-08-01");
            budgets(
                st,
                ctx,
                m2,
                "ba".into(),
                rest2.first().copied(),
                "Microsoft.CostManagement/budgets",
            )
        }
        (
            m2,
            [
                "customers",
                c,
                "providers",
                "microsoft.consumption",
                "budgets",
                rest2 @ ..,
            ],
        ) => {
            let _ = api!(ctx, "2019-10-01", "2023-05-01", "2024-08-01");
            if customer_of(c).is_none() {
                return not_found(ctx);
            }
            budgets(
                st,
                ctx,
                m2,
                format!("customer/{c}"),
                rest2.first().copied(),
                "Microsoft.Consumption/budgets",
            )
        }
        _ => not_found(ctx),
    }
}

fn date_iso(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()
}

/// A name as an ARM path segment (percent-encoded like `url` does for path segments).
fn enc(name: &str) -> String {
    let mut u = url::Url::parse("http://x/").unwrap_or_else(|_| unreachable_url());
    if let Ok(mut s) = u.path_segments_mut() {
        s.push(name);
    }
    u.path().trim_start_matches('/').to_owned()
}

fn unreachable_url() -> url::Url {
    match url::Url::parse("http://localhost/") {
        Ok(u) => u,
        Err(_) => std::process::abort(),
    }
}

fn not_found(ctx: &Ctx) -> Resp {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!("No route for {} {}.", ctx.method, ctx.path),
    )
}

fn token(st: &State, ctx: &Ctx) -> Resp {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&ctx.body)
        .into_owned()
        .collect();
    let tenant = &ctx.segs[0];
    let aad = |status: StatusCode, error: &str, desc: &str| {
        json_resp(status, json!({"error": error, "error_description": desc, "error_codes": [7000215], "timestamp": Utc::now().to_rfc3339(), "trace_id": guid(rand::random()), "correlation_id": guid(rand::random())}).to_string())
    };
    if !tenant.eq_ignore_ascii_case(&st.world.tenant) {
        return aad(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return aad(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if form.get("client_id") != Some(&st.config.client_id) {
        return aad(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    if !form.get("scope").is_some_and(|s| s.ends_with("/.default")) {
        return aad(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.",
        );
    }
    let ok = match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(s), None) => s == &st.config.client_secret,
        (None, Some(a)) => {
            a == &st.config.federated_assertion
                && form
                    .get("client_assertion_type")
                    .is_some_and(|t| t.ends_with("jwt-bearer"))
        }
        _ => false,
    };
    if !ok {
        return aad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let (tok, secs) = issue_token(st);
    json_resp(StatusCode::OK, json!({"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": tok}).to_string())
}

fn issue_token(st: &State) -> (String, u64) {
    let tok = format!(
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.{:016x}{:016x}.{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let secs = st.config.token_lifetime.as_secs();
    if let Ok(mut t) = st.tokens.lock() {
        t.insert(
            tok.clone(),
            Utc::now() + chrono::Duration::seconds(secs as i64),
        );
    }
    if let Ok(mut i) = st.issued.lock() {
        i.push(tok.clone());
    }
    st.count(|c| c.tokens_issued += 1);
    (tok, secs)
}

fn managed_identity(st: &State, ctx: &Ctx) -> Resp {
    let app_service = ctx.low[0] == "msi";
    let authorized = if app_service {
        ctx.headers
            .get("x-identity-header")
            .and_then(|v| v.to_str().ok())
            == Some(st.config.identity_header.as_str())
    } else {
        ctx.headers.get("metadata").and_then(|v| v.to_str().ok()) == Some("true")
    };
    if !authorized {
        return json_resp(StatusCode::BAD_REQUEST, json!({"error": "invalid_request", "error_description": "Required metadata header not specified"}).to_string());
    }
    let Some(resource) = ctx.q("resource") else {
        return json_resp(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_resource", "error_description": "resource is required"})
                .to_string(),
        );
    };
    let (tok, secs) = issue_token(st);
    let expires_on = (Utc::now().timestamp() + secs as i64).to_string();
    json_resp(StatusCode::OK, json!({"access_token": tok, "expires_on": expires_on, "resource": resource, "token_type": "Bearer"}).to_string())
}

/// A list response with `$skiptoken` paging; on the last page `nextLink` is `null` or absent (both occur).
fn list_page(st: &State, ctx: &Ctx, scope: &str, items: Vec<String>) -> Resp {
    let n = items.len();
    list_page_with(st, ctx, scope, n, |i| items[i].clone())
}

/// [`list_page`] rendering only the page's items (lists of thousands are paged by fives in tests).
fn list_page_with(
    st: &State,
    ctx: &Ctx,
    scope: &str,
    total: usize,
    item: impl Fn(usize) -> String,
) -> Resp {
    let size = st.config.list_page_size.max(1) as u64;
    let offset = match ctx.q("$skiptoken") {
        None => 0,
        Some(t) => match st.read_skiptoken(scope, t) {
            Some(o) => o,
            None => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidSkipToken",
                    "The skip token is invalid or expired.",
                );
            }
        },
    };
    let end = (offset + size).min(total as u64);
    let mut out = String::from("{\"value\":[");
    for (i, k) in (offset.min(end) as usize..end as usize).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item(k));
    }
    out.push(']');
    if end < total as u64 {
        out.push_str(",\"nextLink\":");
        out.push_str(&json!(ctx.next_link(&st.arm_base, &st.skiptoken(scope, end))).to_string());
    } else if scope.len().is_multiple_of(2) {
        out.push_str(",\"nextLink\":null");
    }
    out.push('}');
    json_resp(StatusCode::OK, out)
}

fn account_json(w: &World) -> String {
    json!({
        "id": format!("/providers/Microsoft.Billing/billingAccounts/{}", w.account_name),
        "name": w.account_name,
        "type": "Microsoft.Billing/billingAccounts",
        "properties": {"displayName": w.account_display, "agreementType": "MicrosoftPartnerAgreement", "accountType": "Partner", "accountStatus": "Active", "hasReadAccess": true}
    })
    .to_string()
}

fn profile_json(w: &World, p: usize) -> String {
    let pr = &w.profiles[p];
    json!({
        "id": w.profile_id(p), "name": pr.name, "type": "Microsoft.Billing/billingAccounts/billingProfiles",
        "properties": {"displayName": pr.display_name, "currency": pr.currency, "billingRelationshipType": "CSPPartner", "status": "Active", "invoiceDay": 5}
    })
    .to_string()
}

fn customer_json(w: &World, c: usize) -> String {
    let cu = &w.customers[c];
    let mut props = json!({
        "displayName": cu.display_name,
        "billingProfileId": w.profile_id(cu.profile),
        "billingProfileDisplayName": w.profiles[cu.profile].display_name,
        "enabledAzurePlans": [{"skuId": "0001", "skuDescription": "Microsoft Azure Plan"}],
    });
    if let Some((id, d)) = &cu.reseller {
        props["resellers"] = json!([{"resellerId": id, "description": d}]);
    }
    json!({"id": format!("/providers/Microsoft.Billing/billingAccounts/{}/customers/{}", w.account_name, cu.id), "name": cu.id, "type": "Microsoft.Billing/billingAccounts/customers", "properties": props}).to_string()
}

fn subscription_json(w: &World, s: usize) -> String {
    let sub = &w.subs[s];
    let cu = &w.customers[sub.customer];
    let cur = w.profiles[cu.profile].currency;
    let x = h3(w.seed, 13, s as u64);
    let mut v = json!({
        "id": format!("/providers/Microsoft.Billing/billingAccounts/{}/billingSubscriptions/{}", w.account_name, sub.id),
        "name": sub.id,
        "type": if s.is_multiple_of(2) { "Microsoft.Billing/billingAccounts/billingSubscriptions" } else { "Microsoft.Billing/billingSubscriptions" },
        "properties": {
            "displayName": sub.display_name, "subscriptionId": sub.id,
            "subscriptionBillingStatus": if s % 11 == 10 { "Inactive" } else { "Active" },
            "lastMonthCharges": {"currency": cur, "value": Decimal::new((x % 900_000) as i64, 2)},
            "monthToDateCharges": {"currency": cur, "value": Decimal::new(((x >> 20) % 400_000) as i64, 2)},
            "billingProfileId": w.profile_id(cu.profile), "billingProfileDisplayName": w.profiles[cu.profile].display_name,
            "customerId": format!("/providers/Microsoft.Billing/billingAccounts/{}/customers/{}", w.account_name, cu.id),
            "customerDisplayName": cu.display_name, "skuId": "0001", "skuDescription": "Microsoft Azure Plan"
        }
    });
    if s % 11 == 10 {
        v["properties"]["suspensionReasons"] =
            json!([{"effectiveDate": "2026-01-01T17:56:10.563Z", "reason": "Expired"}]);
    }
    // Amount values are JSON numbers in the contract.
    for k in ["lastMonthCharges", "monthToDateCharges"] {
        if let Some(val) = v["properties"][k]["value"]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
        {
            v["properties"][k]["value"] = json!(val);
        }
    }
    v.to_string()
}

fn parse_period(s: &str, format: InvoiceDates) -> Option<NaiveDate> {
    let iso = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let us = NaiveDate::parse_from_str(s, "%m-%d-%Y").ok();
    match format {
        InvoiceDates::Iso => iso,
        InvoiceDates::Us => us,
        InvoiceDates::Both => iso.or(us),
    }
}

fn invoices(st: &State, ctx: &Ctx) -> Resp {
    let _ = api!(ctx, BILLING, "2020-05-01");
    let w = &st.world;
    let (Some(a), Some(b)) = (ctx.q("periodStartDate"), ctx.q("periodEndDate")) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "MissingPeriodDates",
            "periodStartDate and periodEndDate are required.",
        );
    };
    let (Some(from), Some(to)) = (
        parse_period(a, st.config.invoice_dates),
        parse_period(b, st.config.invoice_dates),
    ) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidPeriodDate",
            "periodStartDate and periodEndDate must be dates in MM-DD-YYYY format.",
        );
    };
    let items: Vec<String> = w
        .invoices
        .iter()
        .enumerate()
        .filter(|(_, i)| i.month <= to && month_end(i.month) >= from)
        .map(|(idx, i)| {
            let t = st.totals(idx, 0);
            let total = t.cost_billing.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
            let cur = w.profiles[i.profile].currency;
            let amt = |v: Decimal| json!({"currency": cur, "value": serde_json::value::RawValue::from_string(v.to_string()).ok()});
            let invoice_date = next_month(i.month).with_day(5).unwrap_or(i.month);
            let paid = next_month(next_month(i.month)) <= w.open_month;
            json!({
                // Microsoft's own example ids lack the leading slash; so do half of ours.
                "id": if idx % 2 == 0 { w.invoice_id(idx) } else { w.invoice_id(idx).trim_start_matches('/').to_owned() },
                "name": i.name,
                "type": "Microsoft.Billing/billingAccounts/billingProfiles/invoices",
                "properties": {
                    "dueDate": format!("{}T00:00:00Z", invoice_date.checked_add_days(chrono::Days::new(30)).unwrap_or(invoice_date)),
                    "invoiceDate": format!("{invoice_date}T00:00:00Z"),
                    "invoicePeriodStartDate": format!("{}T00:00:00Z", i.month),
                    "invoicePeriodEndDate": format!("{}T00:00:00Z", month_end(i.month)),
                    "status": if paid { "Paid" } else { "Due" },
                    "amountDue": amt(if paid { Decimal::ZERO } else { total }),
                    "billedAmount": amt(total), "subTotal": amt(total), "taxAmount": amt(Decimal::ZERO), "totalAmount": amt(total),
                    "azurePrepaymentApplied": amt(Decimal::ZERO), "creditAmount": amt(Decimal::ZERO), "freeAzureCreditApplied": amt(Decimal::ZERO),
                    "invoiceType": "AzureService", "isMonthlyInvoice": true,
                    "billingProfileId": w.profile_id(i.profile), "billingProfileDisplayName": w.profiles[i.profile].display_name,
                    "documents": [{"kind": "Invoice", "url": format!("{}invoices/{}.pdf", st.blob_base, i.name)}]
                }
            })
            .to_string()
        })
        .collect();
    list_page(st, ctx, &format!("invoices-{from}-{to}"), items)
}

fn usage_empty(version: &str) -> Resp {
    if version == "2019-10-01" {
        json_resp(StatusCode::OK, "{\"value\":[]}".into())
    } else {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        r
    }
}

fn usage(
    st: &State,
    ctx: &Ctx,
    version: &str,
    inv: usize,
    range: Option<(NaiveDate, NaiveDate)>,
) -> Resp {
    let w = &st.world;
    let open = inv >= w.invoices.len();
    let ver = if open {
        st.open_version.load(Ordering::SeqCst)
    } else {
        0
    };
    let total = if open {
        w.open_rows(inv - w.invoices.len())
    } else {
        w.invoices[inv].rows
    };
    let scope_key = format!("usage-{inv}-{ver}-{range:?}");
    let offset = match ctx.q("$skiptoken") {
        None => 0,
        Some(t) => match st.read_skiptoken(&scope_key, t) {
            Some(o) => o,
            None => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidSkipToken",
                    "The skip token is invalid or has expired; restart the listing.",
                );
            }
        },
    };
    if total == 0 {
        return usage_empty(version);
    }
    let fields = if version == "2019-10-01" {
        UsageFields::V2019
    } else {
        UsageFields::V2024
    };
    let page = st.config.page_size.max(1) as u64;
    let end = (offset + page).min(total);
    let scope = format!(
        "/{}",
        ctx.segs[..ctx.low.iter().rposition(|s| s == "providers").unwrap_or(0)].join("/")
    );
    let mut out = String::with_capacity((end - offset) as usize * 2700 + 200);
    out.push_str("{\"value\":[");
    let mut n = 0;
    for i in offset..end {
        let r = w.usage_row(inv, i, ver);
        if let Some((a, b)) = range
            && (r.date < a || r.date > b)
        {
            continue;
        }
        if n > 0 {
            out.push(',');
        }
        wire::usage_json(&mut out, w, &scope, &r, fields);
        n += 1;
    }
    out.push(']');
    if end < total {
        out.push_str(",\"nextLink\":");
        out.push_str(
            &json!(ctx.next_link(&st.arm_base, &st.skiptoken(&scope_key, end))).to_string(),
        );
    } else if inv.is_multiple_of(2) {
        out.push_str(",\"nextLink\":null");
    }
    out.push('}');
    st.count(|c| {
        c.usage_pages_served += 1;
        c.usage_rows_served += n;
    });
    json_resp(StatusCode::OK, out)
}

fn policy(st: &State, ctx: &Ctx, ci: usize) -> Resp {
    let w = &st.world;
    if ctx.method == Method::PUT {
        let body: Value = serde_json::from_slice(&ctx.body).unwrap_or(Value::Null);
        let v = body["properties"]["viewCharges"].as_str().unwrap_or("");
        let canonical = ["Allowed", "NotAllowed"]
            .into_iter()
            .find(|a| a.eq_ignore_ascii_case(v));
        let Some(v) = canonical else {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "InvalidViewChargesValue",
                "properties.viewCharges must be 'Allowed' or 'NotAllowed'.",
            );
        };
        if let Ok(mut p) = st.policies.lock() {
            p.insert(ci, v.to_owned());
        }
    }
    let v = st
        .policies
        .lock()
        .ok()
        .and_then(|p| p.get(&ci).cloned())
        .unwrap_or_else(|| "Allowed".into());
    json_resp(
        StatusCode::OK,
        json!({
            "id": format!("/providers/Microsoft.Billing/billingAccounts/{}/customers/{}/policies/default", w.account_name, w.customers[ci].id),
            "name": "default", "type": "Microsoft.Billing/billingAccounts/customers/policies",
            "properties": {"viewCharges": v}
        })
        .to_string(),
    )
}

fn retry_headers(st: &State, r: &mut Resp, simulated_secs: f64) {
    let d = st.scaled(simulated_secs);
    header(r, "retry-after", &d.as_secs().to_string());
    header(r, "retry-after-ms", &d.as_millis().to_string());
}

fn start_op(st: &State, id: String, kind: OpKind, location: String) -> Resp {
    let ready_at = Instant::now() + st.scaled(st.config.operation_secs);
    if let Ok(mut ops) = st.ops.lock() {
        ops.insert(
            id.to_ascii_lowercase(),
            Op {
                kind,
                ready_at,
                location: location.clone(),
                blob_sizes: None,
            },
        );
    }
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::ACCEPTED;
    header(&mut r, "location", &location);
    header(&mut r, "odata-entityid", &id);
    retry_headers(st, &mut r, st.config.operation_secs / 2.0);
    r
}

fn poll_op(st: &State, _ctx: &Ctx, id: &str) -> Resp {
    let mut ops = match st.ops.lock() {
        Ok(o) => o,
        Err(_) => {
            return arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "state poisoned",
            );
        }
    };
    let Some(op) = ops.get_mut(&id.to_ascii_lowercase()) else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "OperationNotFound",
            "The operation was not found or has expired.",
        );
    };
    if Instant::now() < op.ready_at {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::ACCEPTED;
        header(&mut r, "location", &op.location);
        let left = op
            .ready_at
            .saturating_duration_since(Instant::now())
            .as_secs_f64()
            * st.config.time_scale;
        retry_headers(st, &mut r, left.max(1.0 / st.config.time_scale));
        return r;
    }
    let exp = Utc::now() + chrono::Duration::from_std(st.config.link_lifetime).unwrap_or_default();
    // Azure's 7 fractional digits (chrono has no %.7f).
    let expiry = format!(
        "{}.{:07}Z",
        exp.format("%Y-%m-%dT%H:%M:%S"),
        exp.timestamp_subsec_nanos() / 100
    );
    match op.kind {
        OpKind::PriceSheet { profile, zip } => {
            let file = if zip {
                "pricesheet.zip"
            } else {
                "pricesheet.csv"
            };
            let link = st.signed_link(&format!("pricesheets/{id}/{profile}/{file}"));
            let body = if zip {
                json!({"downloadUrl": link, "expiryTime": expiry})
            } else {
                json!({"url": link, "expiryTime": expiry})
            };
            json_resp(StatusCode::OK, body.to_string())
        }
        OpKind::CostDetails { inv, customer } => {
            let sizes = op
                .blob_sizes
                .get_or_insert_with(|| cost_blob_sizes(st, inv, customer))
                .clone();
            let blobs: Vec<Value> = sizes
                .iter()
                .enumerate()
                .map(|(i, (_, _, bytes))| json!({"blobLink": st.signed_link(&format!("armreports/{id}/part{i:03}.csv")), "byteCount": bytes}))
                .collect();
            let total: u64 = sizes.iter().map(|s| s.2).sum();
            let w = &st.world;
            let scope = match customer {
                Some(c) => format!(
                    "providers/Microsoft.Billing/billingAccounts/{}/customers/{}",
                    w.account_name, w.customers[c].id
                ),
                None => w
                    .profile_id(w.invoices[inv].profile)
                    .trim_start_matches('/')
                    .to_owned(),
            };
            json_resp(
                StatusCode::OK,
                json!({
                    "id": format!("{scope}/providers/Microsoft.CostManagement/costDetailsOperationResults/{id}"),
                    "name": id, "status": "Completed",
                    "manifest": {"manifestVersion": "2024-08-01", "dataFormat": "Csv", "blobCount": blobs.len(), "byteCount": total, "compressData": false,
                        "requestContext": {"requestScope": scope, "requestBody": {"metric": "ActualCost", "invoiceId": w.invoices[inv].name}},
                        "blobs": blobs},
                    "validTill": expiry
                })
                .to_string(),
            )
        }
    }
}

/// Row ranges and byte sizes of the blobs of a Cost Details report (at least two blobs).
fn cost_blob_sizes(st: &State, inv: usize, customer: Option<usize>) -> Vec<(u64, u64, u64)> {
    let rows = st.world.invoices[inv].rows;
    let n = rows.div_ceil(st.config.blob_rows.max(1)).max(2);
    let per = rows.div_ceil(n).max(1);
    (0..n)
        .map(|i| {
            let (a, b) = ((i * per).min(rows), ((i + 1) * per).min(rows));
            let bytes = cost_csv(st, inv, customer, a, b, i == 0).len() as u64;
            (a, b, bytes)
        })
        .collect()
}

fn cost_csv(st: &State, inv: usize, customer: Option<usize>, a: u64, b: u64, bom: bool) -> String {
    let w = &st.world;
    let scope = w.invoice_id(inv);
    let mut out = String::new();
    if bom {
        out.push('\u{feff}');
    }
    out.push_str(wire::MPA_CSV_HEADER);
    out.push_str("\r\n");
    for i in a..b {
        let r = w.usage_row(inv, i, 0);
        if customer.is_some_and(|c| w.subs[r.sub].customer != c) {
            continue;
        }
        wire::usage_csv(&mut out, w, &scope, &r);
    }
    out
}

fn cost_details(st: &State, ctx: &Ctx, scope: &[&str]) -> Resp {
    let _ = api!(
        ctx,
        "2022-05-01",
        "2023-03-01",
        "2023-08-01",
        "2023-11-01",
        "2024-08-01"
    );
    let w = &st.world;
    let body: Value = if ctx.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&ctx.body).unwrap_or(Value::Null)
    };
    if !body.is_object() {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The request body is not valid JSON.",
        );
    }
    let selectors = ["timePeriod", "invoiceId", "billingPeriod"]
        .iter()
        .filter(|k| body.get(**k).is_some())
        .count();
    if selectors > 1 {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Only one of timePeriod, invoiceId or billingPeriod may be given.",
        );
    }
    if body.get("billingPeriod").is_some() {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "billingPeriod is supported for Enterprise Agreement scopes only.",
        );
    }
    let Some(inv_name) = body.get("invoiceId").and_then(Value::as_str) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "This simulator serves Cost Details by invoiceId (MCA) only.",
        );
    };
    // scope, relative to the billing account: billingprofiles/{bp} | customers/{c}
    let (profile, customer) = match scope {
        ["billingprofiles", bp] => (
            w.profiles
                .iter()
                .position(|p| p.name.eq_ignore_ascii_case(bp)),
            None,
        ),
        ["customers", c] => match w
            .customers
            .iter()
            .position(|x| x.id.eq_ignore_ascii_case(c))
        {
            Some(ci) => (Some(w.customers[ci].profile), Some(ci)),
            None => (None, None),
        },
        _ => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "invoiceId is supported at billing profile or customer scope only.",
            );
        }
    };
    let Some(p) = profile else {
        return not_found(ctx);
    };
    let Some(inv) = w
        .invoices
        .iter()
        .position(|i| i.profile == p && i.name.eq_ignore_ascii_case(inv_name))
    else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidInvoiceId",
            &format!("Invoice '{inv_name}' was not found at this scope."),
        );
    };
    if w.invoices[inv].rows == 0 {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        return r;
    }
    let id = guid(rand::random());
    // From the request's own (still percent-encoded) path: a header must stay ASCII.
    let raw: Vec<&str> = ctx.path.split('/').filter(|s| !s.is_empty()).collect();
    let scope_path = raw[..ctx.low.iter().rposition(|s| s == "providers").unwrap_or(0)].join("/");
    let location = format!(
        "{}{scope_path}/providers/Microsoft.CostManagement/costDetailsOperationResults/{id}?api-version=2024-08-01",
        st.arm_base
    );
    start_op(st, id, OpKind::CostDetails { inv, customer }, location)
}

fn blob(st: &State, ctx: &Ctx) -> Resp {
    let path = ctx.segs.join("/");
    let (Some(se), Some(sig)) = (
        ctx.q("se").and_then(|s| s.parse::<i64>().ok()),
        ctx.q("sig"),
    ) else {
        return blob_error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Signature missing.",
        );
    };
    if st.sign(&path, se) != sig {
        return blob_error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Signature did not match.",
        );
    }
    if se < Utc::now().timestamp() {
        return blob_error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            "Signed expiry time has passed.",
        );
    }
    let w = &st.world;
    match ctx
        .segs
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["pricesheets", _id, profile, file] => {
            let Ok(p) = profile.parse::<usize>() else {
                return blob_error(StatusCode::NOT_FOUND, "BlobNotFound", "no such blob");
            };
            if p >= w.profiles.len() {
                return blob_error(StatusCode::NOT_FOUND, "BlobNotFound", "no such blob");
            }
            if file.ends_with(".zip") {
                match price_zip(st, p) {
                    Ok(bytes) => Response::builder()
                        .header("content-type", "application/zip")
                        .body(Body::from(bytes))
                        .unwrap_or_else(|_| reset_response()),
                    Err(e) => blob_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e),
                }
            } else {
                let mut out = String::from("\u{feff}");
                out.push_str(&wire::PRICE_HEADER_PASCAL.join(","));
                out.push_str("\r\n");
                for line in wire::price_sheet_rows(w, p, wire::PRICE_HEADER_PASCAL) {
                    out.push_str(&line);
                }
                Response::builder()
                    .header("content-type", "text/csv")
                    .body(Body::from(out))
                    .unwrap_or_else(|_| reset_response())
            }
        }
        ["armreports", id, part] => {
            let idx: Option<usize> = part
                .strip_prefix("part")
                .and_then(|p| p.strip_suffix(".csv"))
                .and_then(|p| p.parse().ok());
            let ops = match st.ops.lock() {
                Ok(o) => o,
                Err(_) => {
                    return blob_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "state");
                }
            };
            let Some(op) = ops.get(&id.to_ascii_lowercase()) else {
                return blob_error(StatusCode::NOT_FOUND, "BlobNotFound", "no such blob");
            };
            let (OpKind::CostDetails { inv, customer }, Some(sizes), Some(i)) =
                (&op.kind, &op.blob_sizes, idx)
            else {
                return blob_error(StatusCode::NOT_FOUND, "BlobNotFound", "no such blob");
            };
            let Some((a, b, _)) = sizes.get(i).copied() else {
                return blob_error(StatusCode::NOT_FOUND, "BlobNotFound", "no such blob");
            };
            let (inv, customer) = (*inv, *customer);
            drop(ops);
            let csv = cost_csv(st, inv, customer, a, b, i == 0);
            Response::builder()
                .header("content-type", "text/csv")
                .body(Body::from(csv))
                .unwrap_or_else(|_| reset_response())
        }
        _ => blob_error(
            StatusCode::NOT_FOUND,
            "BlobNotFound",
            "The specified blob does not exist.",
        ),
    }
}

fn blob_error(status: StatusCode, code: &str, msg: &str) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Body::from(format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{msg}</Message></Error>")))
        .unwrap_or_else(|_| reset_response())
}

fn price_zip(st: &State, p: usize) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let rows = wire::price_sheet_rows(&st.world, p, wire::PRICE_HEADER_ALPHA);
    let mut zw = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (i, chunk) in rows.chunks(st.config.price_zip_rows.max(1)).enumerate() {
        zw.start_file(
            format!(
                "pricesheet_{}_part{:03}.csv",
                st.world.profiles[p].name,
                i + 1
            ),
            opts,
        )
        .map_err(|e| e.to_string())?;
        zw.write_all(wire::PRICE_HEADER_ALPHA.join(",").as_bytes())
            .map_err(|e| e.to_string())?;
        zw.write_all(b"\r\n").map_err(|e| e.to_string())?;
        for line in chunk {
            zw.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
        }
    }
    Ok(zw.finish().map_err(|e| e.to_string())?.into_inner())
}

/// Dimension value of a row for Cost Management grouping and filtering.
fn dimension(w: &World, r: &super::generator::UsageRow, name: &str) -> Option<String> {
    let sub = &w.subs[r.sub];
    let cust = w.sub_customer(r.sub);
    let meter = r.meter.map(|m| &w.meters[m]);
    Some(match name.to_ascii_lowercase().as_str() {
        "resourcegroup" | "resourcegroupname" => {
            sub.resource_groups[(r.index % 2) as usize].clone()
        }
        "subscriptionid" => sub.id.clone(),
        "subscriptionname" => sub.display_name.clone(),
        "customername" => cust.display_name.clone(),
        "customertenantid" => cust.tenant_id.clone(),
        "metercategory" => meter.map(|m| m.category.to_owned()).unwrap_or_default(),
        "meterid" => meter.map(|m| m.id.clone()).unwrap_or_default(),
        "servicefamily" => meter
            .map(|m| m.service_family.to_owned())
            .unwrap_or_default(),
        "resourcelocation" => meter.map(|m| m.region.replace(' ', "")).unwrap_or_default(),
        "chargetype" => r.charge_type.to_owned(),
        "publishertype" => r.publisher_type.to_owned(),
        "pricingmodel" => r.pricing_model.to_owned(),
        "billingprofileid" => w.profiles[r.profile].name.clone(),
        _ => return None,
    })
}

fn row_tags(r: &super::generator::UsageRow) -> Vec<(String, String)> {
    if r.index.is_multiple_of(5) {
        return vec![];
    }
    vec![
        (
            "env".into(),
            ["prod", "dev", "test"][(r.index % 3) as usize].into(),
        ),
        ("costCenter".into(), format!("CC-{}", 100 + r.index % 40)),
        ("owner".into(), format!("team-{}", r.index % 9)),
    ]
}

fn filter_ok(
    w: &World,
    r: &super::generator::UsageRow,
    f: &Value,
    plural: bool,
) -> Result<bool, String> {
    let (dk, tk) = if plural {
        ("dimensions", "tags")
    } else {
        ("dimension", "tag")
    };
    let (wrong_d, wrong_t) = if plural {
        ("dimension", "tag")
    } else {
        ("dimensions", "tags")
    };
    if f.get(wrong_d).is_some() || f.get(wrong_t).is_some() {
        return Err(format!("use '{dk}'/'{tk}' with this api-version"));
    }
    if let Some(and) = f.get("and").and_then(Value::as_array) {
        if and.len() < 2 {
            return Err("'and' needs at least two expressions".into());
        }
        for e in and {
            if !filter_ok(w, r, e, plural)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if let Some(or) = f.get("or").and_then(Value::as_array) {
        if or.len() < 2 {
            return Err("'or' needs at least two expressions".into());
        }
        for e in or {
            if filter_ok(w, r, e, plural)? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    if let Some(not) = f.get("not") {
        if plural {
            return Err("'not' is not supported with this api-version".into());
        }
        return Ok(!filter_ok(w, r, not, plural)?);
    }
    let values = |c: &Value| -> Result<Vec<String>, String> {
        if c.get("operator")
            .and_then(Value::as_str)
            .is_some_and(|o| !o.eq_ignore_ascii_case("In"))
        {
            return Err("only the 'In' operator is supported".into());
        }
        Ok(c.get("values")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    };
    if let Some(d) = f.get(dk) {
        let name = d.get("name").and_then(Value::as_str).unwrap_or("");
        let v = dimension(w, r, name).ok_or_else(|| format!("unknown dimension '{name}'"))?;
        return Ok(values(d)?.iter().any(|x| x.eq_ignore_ascii_case(&v)));
    }
    if let Some(t) = f.get(tk) {
        let name = t.get("name").and_then(Value::as_str).unwrap_or("");
        let vals = values(t)?;
        return Ok(row_tags(r)
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(name) && vals.iter().any(|x| x == v)));
    }
    Ok(true)
}

/// (day yyyymmdd when daily, grouping values, currency)
type GroupKey = (Option<u32>, Vec<String>, &'static str);

/// Cost Management query: aggregates the same rows the usage API serves.
fn query(st: &State, ctx: &Ctx, scope: &[&str]) -> Resp {
    let version = api!(ctx, "2019-10-01", "2021-10-01", "2023-11-01", "2024-08-01");
    let plural = version.as_str() >= "2021-10-01";
    let w = &st.world;
    let body: Value = match serde_json::from_slice(&ctx.body) {
        Ok(v) => v,
        Err(e) => {
            return arm_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Invalid query definition: {e}"),
            );
        }
    };
    let bad = |m: &str| arm_error(StatusCode::BAD_REQUEST, "BadRequest", m);
    let ty = body.get("type").and_then(Value::as_str).unwrap_or("");
    if !["usage", "actualcost", "amortizedcost"].contains(&ty.to_ascii_lowercase().as_str()) {
        return bad("type must be Usage, ActualCost or AmortizedCost.");
    }
    let today = w.open_month.with_day(14).unwrap_or(w.open_month);
    let (from, to) = match body
        .get("timeframe")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("custom") => {
            let tp = &body["timePeriod"];
            let d = |k: &str| {
                tp.get(k)
                    .and_then(Value::as_str)
                    .and_then(crate::azure::models::loose::parse_datetime)
                    .map(|d| d.date_naive())
            };
            match (d("from"), d("to")) {
                (Some(a), Some(b)) if a <= b => (a, b),
                _ => {
                    return bad(
                        "timePeriod.from and timePeriod.to are required for a Custom timeframe, with from <= to.",
                    );
                }
            }
        }
        Some("monthtodate") | Some("billingmonthtodate") => (w.open_month, today),
        Some("thelastmonth") | Some("thelastbillingmonth") => {
            let m = w.months.last().copied().unwrap_or(w.open_month);
            (m, month_end(m))
        }
        Some(other) => {
            return bad(&format!(
                "timeframe '{other}' is not supported by the simulator; use Custom."
            ));
        }
        None => return bad("timeframe is required."),
    };
    let ds = &body["dataset"];
    let daily = match ds
        .get("granularity")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("daily") => true,
        None | Some("none") => false,
        Some(g) => return bad(&format!("granularity '{g}' is not supported.")),
    };
    let aggs: Vec<(String, String)> = match ds.get("aggregation").and_then(Value::as_object) {
        Some(a) if a.len() > 2 => return bad("At most two aggregations are allowed."),
        Some(a) => {
            let mut v = Vec::new();
            for (alias, def) in a {
                if def
                    .get("function")
                    .and_then(Value::as_str)
                    .is_some_and(|f| !f.eq_ignore_ascii_case("Sum"))
                {
                    return bad("Only the Sum function is supported.");
                }
                v.push((
                    alias.clone(),
                    def.get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                ));
            }
            v
        }
        None => vec![("PreTaxCost".into(), "PreTaxCost".into())],
    };
    for (_, col) in &aggs {
        if ![
            "pretaxcost",
            "cost",
            "costusd",
            "pretaxcostusd",
            "usagequantity",
            "quantity",
        ]
        .contains(&col.to_ascii_lowercase().as_str())
        {
            return bad(&format!("Aggregation column '{col}' is not supported."));
        }
    }
    let groups: Vec<String> = match ds.get("grouping").and_then(Value::as_array) {
        Some(g) if g.len() > 2 => return bad("At most two groupings are allowed."),
        Some(g) => g
            .iter()
            .map(|x| {
                x.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            })
            .collect(),
        None => vec![],
    };
    let filter = ds.get("filter").cloned();
    // Which invoices / open months and which customer the scope covers.
    let (profile_filter, customer_filter) = match scope {
        [] => (None, None),
        ["billingprofiles", bp] => match w
            .profiles
            .iter()
            .position(|p| p.name.eq_ignore_ascii_case(bp))
        {
            Some(p) => (Some(p), None),
            None => return not_found(ctx),
        },
        ["customers", c] => match w
            .customers
            .iter()
            .position(|x| x.id.eq_ignore_ascii_case(c))
        {
            Some(ci) => (Some(w.customers[ci].profile), Some(ci)),
            None => return not_found(ctx),
        },
        _ => return bad("Unsupported scope for query."),
    };
    let ver = st.open_version.load(Ordering::SeqCst);
    let mut acc: BTreeMap<GroupKey, Vec<Decimal>> = BTreeMap::new();
    let sources: Vec<(usize, u64, NaiveDate)> = w
        .invoices
        .iter()
        .enumerate()
        .map(|(i, v)| (i, v.rows, v.month))
        .chain((0..w.profiles.len()).map(|p| (w.invoices.len() + p, w.open_rows(p), w.open_month)))
        .collect();
    for (inv, rows, month) in sources {
        let p = if inv < w.invoices.len() {
            w.invoices[inv].profile
        } else {
            inv - w.invoices.len()
        };
        if profile_filter.is_some_and(|f| f != p) || month > to || month_end(month) < from {
            continue;
        }
        let v = if inv >= w.invoices.len() { ver } else { 0 };
        for i in 0..rows {
            let r = w.usage_row(inv, i, v);
            if r.date < from
                || r.date > to
                || customer_filter.is_some_and(|c| w.subs[r.sub].customer != c)
            {
                continue;
            }
            if let Some(f) = &filter {
                match filter_ok(w, &r, f, plural) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(m) => return bad(&m),
                }
            }
            let mut key = Vec::new();
            for g in &groups {
                match dimension(w, &r, g) {
                    Some(v) => key.push(v),
                    None => return bad(&format!("Grouping dimension '{g}' is not supported.")),
                }
            }
            let day = daily
                .then(|| (r.date.year() as u32) * 10_000 + r.date.month() * 100 + r.date.day());
            let e = acc
                .entry((day, key, w.profiles[p].currency))
                .or_insert_with(|| vec![Decimal::ZERO; aggs.len()]);
            for (k, (_, col)) in aggs.iter().enumerate() {
                e[k] += match col.to_ascii_lowercase().as_str() {
                    "costusd" | "pretaxcostusd" => r.cost_pricing,
                    "usagequantity" | "quantity" => r.quantity,
                    _ => r.cost_billing,
                };
            }
        }
    }
    let mut columns: Vec<Value> = aggs
        .iter()
        .map(|(a, _)| json!({"name": a, "type": "Number"}))
        .collect();
    if daily {
        columns.push(json!({"name": "UsageDate", "type": "Number"}));
    }
    for g in &groups {
        columns.push(json!({"name": g, "type": "String"}));
    }
    columns.push(json!({"name": "Currency", "type": "String"}));
    let all: Vec<String> = acc
        .into_iter()
        .map(|((day, key, cur), sums)| {
            let mut row = String::from("[");
            for s in &sums {
                let _ = write!(row, "{},", s.normalize());
            }
            if let Some(d) = day {
                let _ = write!(row, "{d},");
            }
            for k in &key {
                let _ = write!(row, "{},", json!(k));
            }
            let _ = write!(row, "\"{cur}\"]");
            row
        })
        .collect();
    let scope_key = format!(
        "query-{}-{}",
        scope.join("/"),
        String::from_utf8_lossy(&ctx.body)
    );
    let offset = match ctx.q("$skiptoken") {
        None => 0,
        Some(t) => match st.read_skiptoken(&scope_key, t) {
            Some(o) => o as usize,
            None => {
                return arm_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidSkipToken",
                    "The skip token does not belong to this query.",
                );
            }
        },
    };
    let per = st.config.query_page_rows.max(1) as usize;
    let end = (offset + per).min(all.len());
    let next = (end < all.len())
        .then(|| ctx.next_link(&st.arm_base, &st.skiptoken(&scope_key, end as u64)));
    let id = guid(rand::random());
    let mut out = format!(
        "{{\"id\":\"{}/providers/Microsoft.CostManagement/Query/{id}\",\"name\":\"{id}\",\"type\":\"microsoft.costmanagement/Query\",\"properties\":{{\"nextLink\":{},\"columns\":{},\"rows\":[",
        ctx.segs[..ctx.low.iter().rposition(|s| s == "providers").unwrap_or(0)].join("/"),
        json!(next),
        Value::Array(columns)
    );
    out.push_str(&all[offset.min(end)..end].join(","));
    out.push_str("]}}");
    let mut r = json_resp(StatusCode::OK, out);
    header(
        &mut r,
        "x-ms-ratelimit-microsoft.costmanagement-qpu-consumed",
        "1",
    );
    r
}

/// Budgets at partner (billing account) or customer scope, with the contract's validation.
fn budgets(st: &State, ctx: &Ctx, m: &Method, scope: String, name: Option<&str>, ty: &str) -> Resp {
    let w = &st.world;
    let base_id = ctx.segs[..ctx.segs.len() - usize::from(name.is_some())].join("/");
    let render = |n: &str, b: &Budget| {
        let mut v = b.body.clone();
        v["id"] = json!(format!("/{base_id}/{n}"));
        v["name"] = json!(n);
        v["type"] = json!(ty);
        v["eTag"] = json!(format!("\"{:x}\"", b.etag));
        v["properties"]["currentSpend"] = json!({"amount": 0, "unit": if scope == "ba" { "USD" } else { w.profiles[0].currency }});
        v
    };
    let mut store = match st.budgets.lock() {
        Ok(s) => s,
        Err(_) => {
            return arm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "state",
            );
        }
    };
    let Some(name) = name else {
        if m != Method::GET {
            return not_found(ctx);
        }
        let items: Vec<Value> = store
            .iter()
            .filter(|((s, _), _)| s == &scope)
            .map(|((_, n), b)| render(n, b))
            .collect();
        return json_resp(StatusCode::OK, json!({"value": items}).to_string());
    };
    let key = (scope.clone(), name.to_ascii_lowercase());
    match *m {
        Method::GET => match store.get(&key) {
            Some(b) => json_resp(StatusCode::OK, render(name, b).to_string()),
            None => arm_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("Budget '{name}' was not found."),
            ),
        },
        Method::DELETE => match store.remove(&key) {
            Some(_) => json_resp(StatusCode::OK, String::new()),
            None => arm_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("Budget '{name}' was not found."),
            ),
        },
        Method::PUT => {
            let body: Value = match serde_json::from_slice(&ctx.body) {
                Ok(v) => v,
                Err(e) => {
                    return arm_error(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        &format!("Invalid budget JSON: {e}"),
                    );
                }
            };
            if let Err(msg) = validate_budget(name, &body, ctx.q("api-version").unwrap_or("")) {
                return arm_error(StatusCode::BAD_REQUEST, "InvalidBudget", &msg);
            }
            let existing = store.get(&key).map(|b| b.etag);
            if let (Some(cur), Some(sent)) = (existing, body.get("eTag").and_then(Value::as_str))
                && sent.trim_matches('"') != format!("{cur:x}")
            {
                return arm_error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "The eTag does not match the current budget; read it again and retry.",
                );
            }
            let mut stored = json!({"properties": body["properties"].clone()});
            if let Some(p) = stored["properties"].as_object_mut() {
                p.remove("currentSpend");
                p.remove("forecastSpend");
            }
            let etag = existing.map_or(1, |e| e + 1) + (rand::random::<u64>() % 1000) * 1_000_000;
            let b = Budget { etag, body: stored };
            let out = render(name, &b).to_string();
            store.insert(key, b);
            json_resp(
                if existing.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                out,
            )
        }
        _ => arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Use GET, PUT or DELETE.",
        ),
    }
}

fn validate_budget(name: &str, body: &Value, version: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("Budget name must be 1-63 characters of letters, digits, '_' or '-'.".into());
    }
    let p = body.get("properties").ok_or("properties is required")?;
    let cat = p
        .get("category")
        .and_then(Value::as_str)
        .ok_or("properties.category is required")?;
    if !["Cost", "Usage", "ReservationUtilization"].contains(&cat) {
        return Err(format!("category '{cat}' is not valid"));
    }
    if cat == "Cost" {
        let amount = p
            .get("amount")
            .and_then(Value::as_f64)
            .ok_or("properties.amount is required for a Cost budget")?;
        if amount <= 0.0 {
            return Err("properties.amount must be greater than 0".into());
        }
    }
    let grain = p
        .get("timeGrain")
        .and_then(Value::as_str)
        .ok_or("properties.timeGrain is required")?;
    let mut grains = vec!["Monthly", "Quarterly", "Annually"];
    if version >= "2023" {
        grains.extend(["Last7Days", "Last30Days"]);
    }
    if !grains.contains(&grain) {
        return Err(format!(
            "timeGrain '{grain}' is not supported at this scope (use Monthly, Quarterly or Annually)"
        ));
    }
    let start = p["timePeriod"]
        .get("startDate")
        .and_then(Value::as_str)
        .ok_or("properties.timePeriod.startDate is required")?;
    let start = crate::azure::models::loose::parse_datetime(start)
        .ok_or("timePeriod.startDate is not a date")?;
    if start.day() != 1 {
        return Err("timePeriod.startDate must be the first day of a month".into());
    }
    if p.get("filters").is_some() && p.get("filter").is_some() {
        return Err("use either 'filter' or the older 'filters', not both".into());
    }
    if let Some(n) = p.get("notifications").and_then(Value::as_object) {
        if n.len() > if version >= "2023" { 10 } else { 5 } {
            return Err("too many notifications".into());
        }
        for (k, v) in n {
            for f in ["enabled", "operator", "threshold", "contactEmails"] {
                if v.get(f).is_none() {
                    return Err(format!("notification '{k}' lacks '{f}'"));
                }
            }
            let t = v["threshold"].as_f64().unwrap_or(-1.0);
            if !(t > 0.0 && t <= 1000.0) {
                return Err(format!(
                    "notification '{k}': threshold must be in (0, 1000]"
                ));
            }
            if v["contactEmails"].as_array().is_none_or(|a| a.is_empty()) {
                return Err(format!(
                    "notification '{k}': at least one contact email is required at this scope"
                ));
            }
        }
    }
    Ok(())
}
