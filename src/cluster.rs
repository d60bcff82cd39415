//! Connecting to a cluster and talking to it.
//!
//! Owns: kubeconfig loading (`--kubeconfig`, `--context`, inline kubeconfig text, in-cluster),
//! the default cluster name, and raw API requests with retries (429/5xx/connection errors,
//! honouring `Retry-After`). Responses are parsed here into JSON so that no library logs a
//! response body (which may hold Secret data).
//!
//! Must not touch: the tree format, git, the store. Never logs or returns credentials: errors
//! name the kubeconfig file, context and server URL only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::de::DeserializeOwned;

/// Errors of connecting to and talking with a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubeconfig {path}: cannot read: {source}")]
    KubeconfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {origin}: malformed: {message}")]
    KubeconfigMalformed { origin: String, message: String },
    #[error("kubeconfig {origin}: {message}")]
    KubeconfigInvalid { origin: String, message: String },
    #[error("no kubeconfig found (set --kubeconfig or KUBECONFIG) and not running in a cluster")]
    NoConfig,
    #[error("cannot build a client for {server}: {message}")]
    Client { server: String, message: String },
    #[error("{server}: cannot connect: {message}")]
    Unreachable { server: String, message: String },
    #[error("{server}: {method} {path}: {code} {reason}: {message}")]
    Api {
        server: String,
        method: String,
        path: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{server}: {method} {path}: unreadable response: {message}")]
    Decode {
        server: String,
        method: String,
        path: String,
        message: String,
    },
}

impl ClusterError {
    /// HTTP status code of an API error, if this is one.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClusterError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// `reason` of an API error's Status body (`NotFound`, `AlreadyExists`, ...).
    pub fn reason(&self) -> Option<&str> {
        match self {
            ClusterError::Api { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Unreachable { .. } => true,
            ClusterError::Api { code, .. } => matches!(code, 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// Whether the credentials were refused (no point retrying).
    pub fn is_auth(&self) -> bool {
        matches!(self.code(), Some(401 | 403))
    }
}

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
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
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
    pub fn from_config(mut config: kube::Config, cluster_name: Option<String>) -> Result<Cluster> {
        install_crypto_provider();
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        if config.connect_timeout.is_none() {
            config.connect_timeout = Some(Duration::from_secs(10));
        }
        let client = kube::Client::try_from(config).map_err(|e| ClusterError::Client {
            server: server.clone(),
            message: first_line(&e.to_string()),
        })?;
        Ok(Cluster {
            client,
            server,
            cluster_name,
            retry: RetryPolicy::default(),
        })
    }

    /// Replaces the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
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
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries)
            .with_jitter();
        let attempt = || {
            let body = body.clone();
            let method = method.clone();
            async move { self.request_once(method, path, body, content_type).await }
        };
        attempt
            .retry(backoff)
            .when(|e: &Attempt| e.error.is_transient())
            .adjust(|e: &Attempt, dur| match (e.retry_after, dur) {
                // Honour the server's Retry-After, but stop when the backoff is used up.
                (Some(after), Some(_)) => Some(after.min(Duration::from_secs(60))),
                (_, dur) => dur,
            })
            .notify(|e: &Attempt, dur| {
                tracing::debug!(error = %e.error, delay = ?dur, "retrying transient failure");
            })
            .await
            .map_err(|a| a.error)
    }

    async fn request_once(
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
            Attempt::new(ClusterError::Unreachable {
                server: self.server.clone(),
                message: first_line(&describe_kube_error(&e)),
            })
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = response.into_body().collect_bytes().await.map_err(|e| {
            Attempt::new(ClusterError::Unreachable {
                server: self.server.clone(),
                message: format!("reading the response: {}", first_line(&e.to_string())),
            })
        })?;
        if status.is_success() {
            return Ok(bytes);
        }
        let (reason, message) = parse_status_body(&bytes, status);
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
pub fn read_kubeconfig(path: &Path) -> Result<Kubeconfig> {
    let text = std::fs::read_to_string(path).map_err(|source| ClusterError::KubeconfigRead {
        path: path.to_path_buf(),
        source,
    })?;
    parse_kubeconfig(&text, &path.display().to_string())
}

/// Parses kubeconfig text. The error keeps only the parser's first line (its position), never
/// a quote of the text, which may hold a token.
pub fn parse_kubeconfig(text: &str, origin: &str) -> Result<Kubeconfig> {
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

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

fn strip_query(path: &str) -> &str {
    path.split_once('?').map_or(path, |(p, _)| p)
}

fn describe_kube_error(e: &kube::Error) -> String {
    // Walk the source chain for the most specific message (e.g. "Connection refused").
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = s.to_string();
        source = s.source();
    }
    message
}

fn parse_status_body(bytes: &[u8], status: http::StatusCode) -> (String, String) {
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
        _ => (
            status
                .canonical_reason()
                .unwrap_or("Error")
                .replace(' ', ""),
            String::new(),
        ),
    }
}

/// Installs the process-wide rustls provider once (kube and the AWS SDK both link rustls).
pub fn install_crypto_provider() {
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
