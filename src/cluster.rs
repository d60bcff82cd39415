//! Connecting to a cluster and talking to it.
//!
//! Owns: kubeconfig loading (`--kubeconfig`, `--context`, inline kubeconfig text, in-cluster),
//! the default cluster name, and raw API requests with retries (429/5xx/connection errors,
//! honouring `Retry-After`). Every request is bounded: a connect timeout, a per-attempt request
//! timeout and a retry budget (attempts and total time, [`Limits`]); when the budget is spent the
//! last cause is returned. Network failures are classified ([`NetFailure`]: refused, DNS,
//! timeout, TLS, reset) so that one error line says what went wrong. kube's own retry layer is
//! disabled: retries happen here, within the budget. Responses are parsed here into JSON so that
//! no library logs a response body (which may hold Secret data).
//!
//! Must not touch: the tree format, git, the store. Never logs or returns credentials: errors
//! name the kubeconfig file, context and server URL only.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::de::DeserializeOwned;

/// Errors of connecting to and talking with a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig file cannot be read.
    #[error("kubeconfig {path}: cannot read: {source}")]
    KubeconfigRead {
        /// The kubeconfig file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The kubeconfig is not valid YAML of the expected shape.
    #[error("kubeconfig {origin}: malformed: {message}")]
    KubeconfigMalformed {
        /// Where the kubeconfig came from (file path or environment).
        origin: String,
        /// What is malformed.
        message: String,
    },
    /// The kubeconfig parses but cannot be used (e.g. missing context or user).
    #[error("kubeconfig {origin}: {message}")]
    KubeconfigInvalid {
        /// Where the kubeconfig came from (file path or environment).
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// Neither a kubeconfig nor an in-cluster service account was found.
    #[error("no kubeconfig found (set --kubeconfig or KUBECONFIG) and not running in a cluster")]
    NoConfig,
    /// The HTTP client for the server cannot be built (e.g. bad certificates).
    #[error("cannot build a client for {server}: {message}")]
    Client {
        /// The API server URL.
        server: String,
        /// Why it cannot be built.
        message: String,
    },
    /// The API server cannot be connected to.
    #[error("{server}: cannot connect: {message}")]
    Unreachable {
        /// The API server URL.
        server: String,
        /// The connection failure.
        message: String,
    },
    /// A classified network failure of one request (no HTTP answer).
    #[error("cannot reach {server}: {failure}")]
    Network {
        /// The API server URL.
        server: String,
        /// The classified failure.
        failure: NetFailure,
    },
    /// The retry budget is spent; `last` is the last attempt's error.
    #[error("{last} (gave up after {attempts} attempts in {:.1}s)", elapsed.as_secs_f64())]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// Time spent on all attempts.
        elapsed: Duration,
        /// The last attempt's error.
        last: Box<ClusterError>,
    },
    /// The API server answered with an error status.
    #[error("{server}: {method} {path}: {code} {reason}: {message}")]
    Api {
        /// The API server URL.
        server: String,
        /// The HTTP method.
        method: String,
        /// The request path.
        path: String,
        /// The HTTP status code.
        code: u16,
        /// The `reason` of the returned Status (or the HTTP reason phrase).
        reason: String,
        /// The `message` of the returned Status (or the response body).
        message: String,
    },
    /// The API server's response body cannot be decoded.
    #[error("{server}: {method} {path}: unreadable response: {message}")]
    Decode {
        /// The API server URL.
        server: String,
        /// The HTTP method.
        method: String,
        /// The request path.
        path: String,
        /// The decoding error.
        message: String,
    },
}

impl ClusterError {
    /// HTTP status code of an API error, if this is one.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClusterError::Api { code, .. } => Some(*code),
            ClusterError::GaveUp { last, .. } => last.code(),
            _ => None,
        }
    }

    /// `reason` of an API error's Status body (`NotFound`, `AlreadyExists`, ...).
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClusterError::Api { reason, .. } => Some(reason),
            ClusterError::GaveUp { last, .. } => last.reason(),
            _ => None,
        }
    }

    /// Whether retrying the same request may succeed. A certificate that is not trusted or a
    /// name that does not resolve will not get better by retrying.
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            ClusterError::Unreachable { .. } => true,
            ClusterError::Network { failure, .. } => failure.is_transient(),
            ClusterError::Api { code, .. } => matches!(code, 429 | 500 | 502 | 503 | 504),
            ClusterError::GaveUp { last, .. } => last.is_transient(),
            _ => false,
        }
    }

    /// The error without the retry wrapper.
    pub fn root(&self) -> &ClusterError {
        match self {
            ClusterError::GaveUp { last, .. } => last.root(),
            other => other,
        }
    }

    /// Whether the credentials were refused (no point retrying).
    pub(crate) fn is_auth(&self) -> bool {
        matches!(self.code(), Some(401 | 403))
    }
}

/// Result of a cluster operation.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// Where to find the cluster.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Path of a kubeconfig file; `None` means `$KUBECONFIG`, `~/.kube/config`, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Inline kubeconfig text (the CRDs' `spec.kubeconfig`); wins over `kubeconfig`.
    pub kubeconfig_text: Option<String>,
    /// Context to use instead of the kubeconfig's current context.
    pub context: Option<String>,
}

/// A connected cluster: a client plus what we know of where it points.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    server: String,
    cluster_name: Option<String>,
    retry: RetryPolicy,
    /// Set when a request spent its whole retry budget on transient failures, cleared by the
    /// next success: while set, requests get one attempt, so that a server that keeps failing
    /// fails a restore of many objects in one budget, not one budget per object.
    exhausted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

/// What bounds every request of the process: timeouts and the retry budget. The command line
/// sets them once ([`set_limits`]); every [`Cluster`] made afterwards uses them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest time to open a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest time one attempt of a request may take, body included.
    pub request_timeout: Duration,
    /// Attempts of one request, the first included.
    pub attempts: u32,
    /// Longest time one request may take, all its attempts and waits included.
    pub retry_budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            attempts: 7,
            retry_budget: Duration::from_secs(180),
        }
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Sets the process-wide limits (the command line does, once, before connecting). Later calls
/// are ignored.
pub fn set_limits(limits: Limits) {
    let _ = LIMITS.set(limits);
}

/// The process-wide limits ([`Limits::default`] unless [`set_limits`] was called).
pub fn limits() -> Limits {
    LIMITS.get().copied().unwrap_or_default()
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Attempts after the first one.
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Longest time for all attempts and waits of one request.
    pub budget: Duration,
    /// Longest time of one attempt.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        let l = limits();
        RetryPolicy {
            max_retries: l.attempts.saturating_sub(1) as usize,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            budget: l.retry_budget,
            request_timeout: l.request_timeout,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `n + 1` (n ≥ 1 attempts made): exponential with jitter, or the
    /// server's `Retry-After` when it gave one.
    fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after;
        }
        let exp = self
            .min_delay
            .saturating_mul(
                1u32.checked_shl(n.saturating_sub(1).min(20))
                    .unwrap_or(u32::MAX),
            )
            .min(self.max_delay);
        // Full jitter on the upper half: [exp/2, exp].
        let half = exp / 2;
        half + half.mul_f64(jitter())
    }
}

/// A number in [0, 1) from the clock (good enough to spread retries).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// Why a request got no HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetFailure {
    /// Nothing listens there (connection refused).
    Refused,
    /// The host name does not resolve.
    Dns(String),
    /// No connection within the connect timeout.
    ConnectTimeout(Duration),
    /// Connected, but no complete answer within the request timeout.
    Timeout(Duration),
    /// The server's certificate is not signed by a trusted CA.
    TlsUnknownIssuer,
    /// The server's certificate has expired (or is not yet valid).
    TlsExpired,
    /// The server's certificate is for another name.
    TlsNameMismatch,
    /// Another TLS failure.
    Tls(String),
    /// The connection was reset or closed mid-request.
    Reset(String),
    /// Anything else.
    Other(String),
}

impl NetFailure {
    /// Whether another attempt may succeed.
    pub(crate) fn is_transient(&self) -> bool {
        !matches!(
            self,
            NetFailure::Dns(_)
                | NetFailure::TlsUnknownIssuer
                | NetFailure::TlsExpired
                | NetFailure::TlsNameMismatch
                | NetFailure::Tls(_)
        )
    }

    /// Classifies an error by walking its source chain (io errors, rustls errors, hyper's
    /// connect errors).
    pub(crate) fn classify(e: &(dyn std::error::Error + 'static)) -> NetFailure {
        let mut deepest = e.to_string();
        let mut dns = false;
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = current {
            if let Some(tls) = err.downcast_ref::<rustls::Error>() {
                return NetFailure::from_rustls(tls);
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                if let Some(tls) = io
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    return NetFailure::from_rustls(tls);
                }
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => return NetFailure::Refused,
                    std::io::ErrorKind::TimedOut => {
                        return NetFailure::Timeout(Duration::ZERO);
                    }
                    std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof => {
                        return NetFailure::Reset(first_line(&io.to_string()));
                    }
                    _ => {}
                }
            }
            let text = err.to_string();
            if text.starts_with("dns error") || text.contains("failed to lookup address") {
                dns = true;
            }
            if !text.is_empty() {
                deepest = text;
            }
            current = err.source();
        }
        let deepest = first_line(&deepest);
        if let Some(tls) = tls_from_text(&deepest) {
            return tls;
        }
        if dns {
            NetFailure::Dns(deepest)
        } else if deepest.contains("connection closed")
            || deepest.contains("connection reset")
            || deepest.contains("IncompleteMessage")
        {
            NetFailure::Reset(deepest)
        } else {
            NetFailure::Other(deepest)
        }
    }

    fn from_rustls(e: &rustls::Error) -> NetFailure {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => NetFailure::TlsUnknownIssuer,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => NetFailure::TlsExpired,
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    NetFailure::TlsNameMismatch
                }
                other => NetFailure::Tls(format!("invalid certificate: {other:?}")),
            },
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                NetFailure::Tls(NOT_TLS.into())
            }
            other => NetFailure::Tls(first_line(&other.to_string())),
        }
    }
}

/// What a TLS client makes of a server that answers in plain HTTP.
const NOT_TLS: &str =
    "the server does not answer in TLS there (a plain-HTTP port? then the URL is http://)";

/// rustls errors that reach us only as text (wrapped by layers that do not expose them as a
/// source), recognised by rustls's own wording.
fn tls_from_text(text: &str) -> Option<NetFailure> {
    if text.contains("received corrupt message of type InvalidContentType") {
        return Some(NetFailure::Tls(NOT_TLS.into()));
    }
    if !(text.contains("invalid peer certificate")
        || text.contains("peer is incompatible")
        || text.contains("received fatal alert"))
    {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    Some(
        if text.contains("UnknownIssuer")
            || lower.contains("unknown issuer")
            || text.contains("BadSignature")
        {
            NetFailure::TlsUnknownIssuer
        } else if text.contains("Expired")
            || lower.contains("expired")
            || lower.contains("not valid yet")
            || text.contains("NotValidYet")
        {
            NetFailure::TlsExpired
        } else if text.contains("NotValidForName") || lower.contains("not valid for name") {
            NetFailure::TlsNameMismatch
        } else if text.contains("CaUsedAsEndEntity") {
            NetFailure::Tls(
                "the server presents a CA certificate as its own (self-signed?): not trusted"
                    .into(),
            )
        } else {
            NetFailure::Tls(text.to_owned())
        },
    )
}

impl std::fmt::Display for NetFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetFailure::Refused => f.write_str("connection refused (nothing listens there)"),
            NetFailure::Dns(m) => write!(f, "the host name does not resolve (DNS: {m})"),
            NetFailure::ConnectTimeout(d) => {
                write!(f, "no connection within {}", secs(*d))
            }
            NetFailure::Timeout(d) if d.is_zero() => f.write_str("timed out"),
            NetFailure::Timeout(d) => write!(f, "no answer within {}", secs(*d)),
            NetFailure::TlsUnknownIssuer => {
                f.write_str("TLS certificate not trusted (unknown issuer)")
            }
            NetFailure::TlsExpired => f.write_str("TLS certificate expired (or not yet valid)"),
            NetFailure::TlsNameMismatch => {
                f.write_str("TLS certificate is for another host name (name mismatch)")
            }
            NetFailure::Tls(m) => write!(f, "TLS handshake failed: {m}"),
            NetFailure::Reset(m) => write!(f, "the connection was dropped: {m}"),
            NetFailure::Other(m) => f.write_str(m),
        }
    }
}

impl Cluster {
    /// Connects as the options say. Does not contact the server yet.
    pub async fn connect(opts: &ConnectOptions) -> Result<Cluster> {
        let (kubeconfig, origin) = if let Some(text) = &opts.kubeconfig_text {
            (
                Some(parse_kubeconfig(text, "(inline)")?),
                "(inline)".to_string(),
            )
        } else if let Some(path) = &opts.kubeconfig {
            (Some(read_kubeconfig(path)?), path.display().to_string())
        } else {
            match Kubeconfig::read() {
                Ok(k) => (Some(k), "(default)".to_string()),
                Err(_) => (None, "(in-cluster)".to_string()),
            }
        };
        match kubeconfig {
            Some(kc) => Self::from_kubeconfig(kc, opts.context.as_deref(), &origin).await,
            None => {
                let config = kube::Config::incluster().map_err(|_| ClusterError::NoConfig)?;
                Self::from_config(config, None)
            }
        }
    }

    async fn from_kubeconfig(
        kc: Kubeconfig,
        context: Option<&str>,
        origin: &str,
    ) -> Result<Cluster> {
        let context_name = context
            .map(str::to_string)
            .or_else(|| kc.current_context.clone())
            .ok_or_else(|| ClusterError::KubeconfigInvalid {
                origin: origin.to_string(),
                message: "no current-context and no --context given".into(),
            })?;
        let cluster_name = kc
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .map(|c| c.cluster.clone())
            .ok_or_else(|| ClusterError::KubeconfigInvalid {
                origin: origin.to_string(),
                message: format!("context {context_name:?} not found"),
            })?;
        let options = KubeConfigOptions {
            context: Some(context_name),
            cluster: None,
            user: None,
        };
        let config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| ClusterError::KubeconfigInvalid {
                origin: origin.to_string(),
                message: first_line(&e.to_string()),
            })?;
        Self::from_config(config, Some(cluster_name))
    }

    /// Wraps an existing configuration (tests, the emulator).
    pub(crate) fn from_config(
        mut config: kube::Config,
        cluster_name: Option<String>,
    ) -> Result<Cluster> {
        install_crypto_provider();
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let limits = limits();
        config.connect_timeout = Some(limits.connect_timeout);
        // Our own loop retries, within the budget; kube's layer would retry 15 times for up to
        // 1000 s each.
        config.default_retry = false;
        let plugin = config
            .auth_info
            .exec
            .as_ref()
            .and_then(|e| e.command.clone());
        let client = kube::Client::try_from(config).map_err(|e| ClusterError::Client {
            server: server.clone(),
            message: exec_failure(plugin.as_deref(), first_line(&e.to_string())),
        })?;
        Ok(Cluster {
            client,
            server,
            cluster_name,
            retry: RetryPolicy::default(),
            exhausted: Default::default(),
        })
    }

    /// Replaces the retry policy.
    pub(crate) fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The API server URL (no credentials).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The kubeconfig context's cluster name, when connected through a kubeconfig.
    pub fn cluster_name(&self) -> Option<&str> {
        self.cluster_name.as_deref()
    }

    /// The underlying client (for typed `kube::Api` use).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// GET `path` (with query) and parse the JSON body, retrying transient failures.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let bytes = self
            .request_bytes(http::Method::GET, path, None, None)
            .await?;
        self.decode("GET", path, &bytes)
    }

    /// Sends a request with an optional JSON body and returns the raw body of a 2xx answer,
    /// retrying transient failures (429, 5xx, connection errors) with exponential backoff and
    /// `Retry-After`.
    pub async fn request_bytes(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Result<bytes::Bytes> {
        use std::sync::atomic::Ordering;
        let started = Instant::now();
        let mut attempts = 0u32;
        let max_retries = if self.exhausted.load(Ordering::Relaxed) {
            0
        } else {
            self.retry.max_retries
        };
        loop {
            attempts += 1;
            let remaining = self.retry.budget.saturating_sub(started.elapsed());
            let timeout = self
                .retry
                .request_timeout
                .min(remaining.max(Duration::from_millis(1)));
            let result = self
                .request_once(method.clone(), path, body.clone(), content_type, timeout)
                .await;
            let failed = match result {
                Ok(bytes) => {
                    self.exhausted.store(false, Ordering::Relaxed);
                    if attempts > 1 {
                        tracing::debug!(%method, path = strip_query(path), attempts, "succeeded after retries");
                    }
                    return Ok(bytes);
                }
                Err(a) => a,
            };
            let give_up = |last: ClusterError| {
                if attempts > 1 {
                    ClusterError::GaveUp {
                        attempts,
                        elapsed: started.elapsed(),
                        last: Box::new(last),
                    }
                } else {
                    last
                }
            };
            if !failed.error.is_transient() {
                return Err(give_up(failed.error));
            }
            let delay = self.retry.delay(attempts, failed.retry_after);
            if attempts as usize > max_retries || started.elapsed() + delay >= self.retry.budget {
                if attempts > 1 {
                    self.exhausted.store(true, Ordering::Relaxed);
                }
                return Err(give_up(failed.error));
            }
            tracing::debug!(error = %failed.error, delay = ?delay, attempt = attempts, "retrying transient failure");
            tokio::time::sleep(delay).await;
        }
    }

    async fn request_once(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, Attempt> {
        match tokio::time::timeout(
            timeout,
            self.request_unbounded(method, path, body, content_type),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Attempt::new(ClusterError::Network {
                server: self.target(),
                failure: NetFailure::Timeout(timeout),
            })),
        }
    }

    /// The server and, when known, the kubeconfig cluster name, for error messages.
    fn target(&self) -> String {
        match &self.cluster_name {
            Some(c) => format!("{} (cluster {c:?})", self.server),
            None => self.server.clone(),
        }
    }

    async fn request_unbounded(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Result<bytes::Bytes, Attempt> {
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::ACCEPT, "application/json");
        if let Some(ct) = content_type {
            builder = builder.header(http::header::CONTENT_TYPE, ct);
        }
        let request = builder
            .body(kube::client::Body::from(body.unwrap_or_default()))
            .map_err(|e| Attempt::new(self.decode_error(method.as_str(), path, e.to_string())))?;
        let response = self.client.send(request).await.map_err(|e| {
            Attempt::new(ClusterError::Network {
                server: self.target(),
                failure: classify_kube_error(&e, limits().connect_timeout),
            })
        })?;
        let status = response.status();
        // Read only for an error answer (its description), so no success pays for it.
        let content_type = if status.is_success() {
            None
        } else {
            content_type_of(response.headers())
        };
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.into_body().collect_bytes().await.map_err(|e| {
            Attempt::new(ClusterError::Network {
                server: self.target(),
                failure: match NetFailure::classify(&e) {
                    NetFailure::Other(m) => NetFailure::Reset(format!("reading the response: {m}")),
                    f => f,
                },
            })
        })?;
        if status.is_success() {
            return Ok(bytes);
        }
        let (reason, message) = parse_status_body(&bytes, status, content_type);
        Err(Attempt {
            error: ClusterError::Api {
                server: self.server.clone(),
                method: method.to_string(),
                path: strip_query(path).to_string(),
                code: status.as_u16(),
                reason,
                message,
            },
            retry_after,
        })
    }

    /// Parses a JSON body; the error never quotes the body (it may hold secrets).
    pub fn decode<'a, T: serde::Deserialize<'a>>(
        &self,
        method: &str,
        path: &str,
        bytes: &'a [u8],
    ) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|e| self.decode_error(method, path, e.to_string()))
    }

    fn decode_error(&self, method: &str, path: &str, message: String) -> ClusterError {
        ClusterError::Decode {
            server: self.server.clone(),
            method: method.to_string(),
            path: strip_query(path).to_string(),
            message,
        }
    }
}

/// One failed attempt: the error plus the server's `Retry-After`, if any.
#[derive(Debug)]
struct Attempt {
    error: ClusterError,
    retry_after: Option<Duration>,
}

impl Attempt {
    fn new(error: ClusterError) -> Self {
        Attempt {
            error,
            retry_after: None,
        }
    }
}

/// Reads and parses a kubeconfig file.
pub(crate) fn read_kubeconfig(path: &Path) -> Result<Kubeconfig> {
    let text = std::fs::read_to_string(path).map_err(|source| ClusterError::KubeconfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    parse_kubeconfig(&text, &path.display().to_string())
}

/// Parses kubeconfig text. The error keeps only the parser's first line (its position), never
/// a quote of the text, which may hold a token.
pub(crate) fn parse_kubeconfig(text: &str, origin: &str) -> Result<Kubeconfig> {
    let malformed = |message: String| ClusterError::KubeconfigMalformed {
        origin: origin.to_string(),
        message,
    };
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| malformed(redact_parse_error(&e.to_string())))?;
    if !value.is_object() {
        return Err(malformed("not a mapping".into()));
    }
    Kubeconfig::from_yaml(text).map_err(|e| malformed(redact_parse_error(&e.to_string())))
}

fn redact_parse_error(message: &str) -> String {
    // Parser messages may echo the offending scalar; keep the description and position only.
    let line = first_line(message);
    match line.find(['"', '`', '\'']) {
        Some(i) => format!("{}…", line[..i].trim_end()),
        None => line,
    }
}

/// `2s`, `1.5s`: a duration for people.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if (s - s.round()).abs() < 0.05 {
        format!("{}s", s.round())
    } else {
        format!("{s:.1}s")
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

fn classify_kube_error(e: &kube::Error, connect_timeout: Duration) -> NetFailure {
    match NetFailure::classify(e) {
        // hyper-timeout's connect timeout is an io TimedOut inside a Connect error.
        NetFailure::Timeout(d) if d.is_zero() && is_connect_error(e) => {
            NetFailure::ConnectTimeout(connect_timeout)
        }
        f => f,
    }
}

fn is_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        // hyper-util's legacy client error: "client error (Connect)".
        if err.to_string().contains("(Connect)") {
            return true;
        }
        current = err.source();
    }
    false
}

fn content_type_of(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
}

/// The `reason` and `message` of an error answer. An answer that is not a Kubernetes `Status`
/// (a proxy's or another server's page) is described, never quoted: its size and content type,
/// and what to check.
fn parse_status_body(
    bytes: &[u8],
    status: http::StatusCode,
    content_type: Option<String>,
) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct StatusBody {
        #[serde(default)]
        reason: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<StatusBody>(bytes) {
        Ok(s) if !s.reason.is_empty() || !s.message.is_empty() => {
            let reason = if s.reason.is_empty() {
                status.canonical_reason().unwrap_or("Error").to_string()
            } else {
                s.reason
            };
            (reason, s.message)
        }
        _ => {
            let what = if bytes.is_empty() {
                "an empty answer".to_string()
            } else {
                format!(
                    "{}, {} bytes, not shown",
                    content_type.as_deref().unwrap_or("no content type"),
                    bytes.len()
                )
            };
            let hint = if status.is_redirection() {
                ": a redirect, which no API server answers; check the kubeconfig's server URL (http:// or https://, its path)"
            } else if status == http::StatusCode::NOT_FOUND {
                ": check the kubeconfig's server URL (is a Kubernetes API server there?)"
            } else {
                ""
            };
            (
                status
                    .canonical_reason()
                    .unwrap_or("Error")
                    .replace(' ', ""),
                format!("not a Kubernetes API answer ({what}){hint}"),
            )
        }
    }
}

/// A client error that came from the kubeconfig's credential plugin names the plugin (kube's
/// own text says only "unable to run auth exec").
fn exec_failure(plugin: Option<&str>, message: String) -> String {
    match plugin {
        Some(cmd) if message.contains("auth exec") => {
            // kube's text of a failed run quotes the whole command line and a Debug of its
            // output; the exit status is what matters (the plugin's stderr went to ours).
            if let Some(at) = message.find("failed with status exit status: ") {
                let code: String = message[at + "failed with status exit status: ".len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                return format!(
                    "the kubeconfig's credential plugin `{cmd}` exited with status {code}"
                );
            }
            let hint = if message.contains("No such file") {
                " (is it installed and on PATH?)"
            } else {
                ""
            };
            format!("the kubeconfig's credential plugin `{cmd}` failed: {message}{hint}")
        }
        _ => message,
    }
}

/// Installs the process-wide rustls provider once (kube and the AWS SDK both link rustls).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Credential-bearing kubeconfig keys whose values must never be echoed.
const SENSITIVE_KEYS: &[&str] = &[
    "token",
    "password",
    "client-key-data",
    "client-certificate-data",
    "certificate-authority-data",
    "id-token",
    "refresh-token",
    "access-token",
];

/// Removes every credential value of `kubeconfig` from `message`.
pub fn redact_kubeconfig(message: &str, kubeconfig: &str) -> String {
    let mut out = message.to_string();
    for line in kubeconfig.lines() {
        let Some((key, value)) = line.trim().trim_start_matches("- ").split_once(':') else {
            continue;
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        if SENSITIVE_KEYS.contains(&key.trim()) && value.len() >= 4 {
            out = out.replace(value, "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("client error (Connect)")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn tls(e: rustls::CertificateError) -> NetFailure {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(e),
        );
        NetFailure::classify(&Outer(io))
    }

    #[test]
    fn network_failures_are_classified() {
        use rustls::CertificateError as C;
        assert_eq!(tls(C::UnknownIssuer), NetFailure::TlsUnknownIssuer);
        assert_eq!(tls(C::Expired), NetFailure::TlsExpired);
        assert_eq!(tls(C::NotValidForName), NetFailure::TlsNameMismatch);
        assert!(
            !tls(C::UnknownIssuer).is_transient(),
            "a bad certificate is not retried"
        );
        let refused = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(NetFailure::classify(&refused), NetFailure::Refused);
        assert!(NetFailure::Refused.is_transient());
        let reset = Outer(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(NetFailure::classify(&reset), NetFailure::Reset(_)));
        let dns = Outer(std::io::Error::other(
            "dns error: failed to lookup address information",
        ));
        assert!(matches!(NetFailure::classify(&dns), NetFailure::Dns(_)));
        // Through layers that only keep the text (rustls's wording).
        let text = |t: &str| NetFailure::classify(&Outer(std::io::Error::other(t.to_owned())));
        assert_eq!(
            text(
                "invalid peer certificate: certificate expired: verification time 2, but certificate is not valid after 1"
            ),
            NetFailure::TlsExpired
        );
        assert_eq!(
            text("invalid peer certificate: certificate not valid for name \"127.0.0.1\""),
            NetFailure::TlsNameMismatch
        );
        assert_eq!(
            text("invalid peer certificate: UnknownIssuer"),
            NetFailure::TlsUnknownIssuer
        );
        assert_eq!(
            NetFailure::TlsUnknownIssuer.to_string(),
            "TLS certificate not trusted (unknown issuer)"
        );
    }

    #[test]
    fn retry_delays_grow_and_honour_retry_after() {
        let p = RetryPolicy {
            max_retries: 5,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            budget: Duration::from_secs(10),
            request_timeout: Duration::from_secs(1),
        };
        let d1 = p.delay(1, None);
        let d4 = p.delay(4, None);
        assert!(d1 <= Duration::from_millis(100) && d1 >= Duration::from_millis(50));
        assert!(d4 >= Duration::from_millis(400) && d4 <= Duration::from_millis(800));
        assert!(p.delay(30, None) <= Duration::from_secs(1));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }
}
