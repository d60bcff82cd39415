//! [`S3Store`]: the store in an S3 bucket (or an S3-compatible server) with `aws-sdk-s3`.
//!
//! Conditional writes use `If-None-Match: *` (immutable packs) and `If-Match: <etag>` (the
//! manifest); 412 and 409 (`ConditionalRequestConflict`) map to
//! [`StoreError::PreconditionFailed`]. Listings follow every page. Plain http only with an
//! explicit `http://` endpoint or `--insecure`. Credentials (static ones from flags/env, or
//! the standard AWS chain) live only inside the SDK client: [`Secret`] never prints, and
//! errors carry only the SDK's error code and message.
//!
//! Every request is bounded by the process-wide limits ([`crate::cluster::limits`]): the connect
//! timeout, the request timeout (to the first byte of the answer; stalled bodies are cut by the
//! SDK's stalled-stream protection), the retry attempts and the retry budget (all attempts of
//! one operation, an upload's body included). Errors are mapped to one clear
//! cause: a missing bucket, rejected credentials, access denied, or a classified network failure.

use std::fmt;
use std::str::FromStr;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use futures::future::BoxFuture;

use super::{Etag, Object, ObjectMeta, ObjectStore, PutOutcome, Result, StoreError, check_key};

/// A credential: its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret value, for the SDK only.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// How to reach S3.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:9000`); default: AWS.
    pub endpoint: Option<String>,
    /// Region; default: the AWS chain's, else `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible servers.
    pub path_style: bool,
    /// Allow plain http for an endpoint given without a scheme.
    pub insecure: bool,
    /// Static credentials; both or neither. Otherwise the standard AWS chain is used.
    pub access_key_id: Option<Secret>,
    /// The secret key matching `access_key_id`.
    pub secret_access_key: Option<Secret>,
}

/// A store in an S3 bucket under a key prefix.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    endpoint: String,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl S3Store {
    /// Builds the client (no request is sent). Validates the endpoint's scheme rule.
    pub async fn connect(bucket: &str, prefix: &str, opts: &S3Options) -> Result<S3Store> {
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let bad = |reason: String| StoreError::BadUrl {
            url: url.clone(),
            reason,
        };
        let endpoint = match opts.endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(e) if e.contains('@') => {
                return Err(bad(
                    "the endpoint must not contain credentials (use flags or the environment)"
                        .into(),
                ));
            }
            Some(e) if e.starts_with("https://") || e.starts_with("http://") => Some(e.to_owned()),
            Some(e) if e.contains("://") => {
                return Err(bad(format!(
                    "endpoint {e:?}: only http:// and https:// are supported"
                )));
            }
            Some(e) if opts.insecure => Some(format!("http://{e}")),
            Some(e) => Some(format!("https://{e}")),
        };
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        match (&opts.access_key_id, &opts.secret_access_key) {
            (Some(id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    id.expose(),
                    secret.expose(),
                    None,
                    None,
                    "k8s-snap-static",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(bad(
                    "give both the access key id and the secret access key, or neither".into(),
                ));
            }
        }
        let limits = crate::cluster::limits();
        loader = loader
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(limits.connect_timeout)
                    .read_timeout(limits.request_timeout)
                    // All attempts of one request, uploads included (a slow link needs a
                    // larger --retry-budget for big packs); downloads stream after it.
                    .operation_timeout(limits.retry_budget)
                    .build(),
            )
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(limits.attempts)
                    .with_max_backoff(std::time::Duration::from_secs(10)),
            );
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(opts.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .retry_classifier(NoRetryOnPermanentFailure);
        if shared.region().is_none() {
            b = b.region(Region::new("us-east-1"));
        }
        if let Some(e) = &endpoint {
            b = b.endpoint_url(e.clone());
        }
        let client = Client::from_conf(b.build());
        Ok(S3Store {
            client,
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            endpoint: endpoint.unwrap_or_else(|| "AWS".into()),
        })
    }

    /// Creates the bucket when it does not exist (`--createbucket`); true when created.
    pub async fn ensure_bucket(&self) -> Result<bool> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(false),
            Err(e) if e.raw_response().map(HasStatus::status) == Some(404) => {
                self.client
                    .create_bucket()
                    .bucket(&self.bucket)
                    .send()
                    .await
                    .map_err(|e| self.err("CreateBucket", "", e))?;
                tracing::info!(bucket = %self.bucket, "created the bucket");
                Ok(true)
            }
            Err(e) => Err(self.err("HeadBucket", "", e)),
        }
    }

    /// Starts a GET of `key` (headers read, body still streaming).
    async fn get_object(
        &self,
        key: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput> {
        let full = self.full_key(key)?;
        self.client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.err("GET", key, e))
    }

    fn full_key(&self, key: &str) -> Result<String> {
        check_key(&self.describe(), key)?;
        Ok(if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        })
    }

    fn err<E, R>(&self, op: &'static str, key: &str, e: SdkError<E, R>) -> StoreError
    where
        E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
        R: fmt::Debug + HasStatus + Send + Sync + 'static,
    {
        let status = e.raw_response().map(HasStatus::status);
        let code = e
            .as_service_error()
            .and_then(ProvideErrorMetadata::code)
            .map(str::to_owned);
        if code.as_deref() == Some("NoSuchBucket") {
            return StoreError::NoSuchBucket {
                store: self.describe(),
                bucket: self.bucket.clone(),
            };
        }
        let backend = |reason: String| StoreError::Backend {
            store: self.describe(),
            op,
            key: key.to_owned(),
            reason,
        };
        match status {
            // S3 names what is missing (NoSuchKey, NoSuchBucket) in the body of every 404 but
            // a HEAD's: one without a code is not S3's answer (another server, a wrong path).
            Some(404) if code.is_none() && matches!(op, "GET" | "LIST") => backend(
                "HTTP 404 without an S3 error code: not an S3 answer; check --s3-endpoint (and --s3-path-style)"
                    .into(),
            ),
            Some(404) => StoreError::NotFound {
                store: self.describe(),
                key: key.to_owned(),
            },
            Some(412) | Some(409) => StoreError::PreconditionFailed {
                store: self.describe(),
                key: key.to_owned(),
            },
            Some(401) | Some(403) => match code.as_deref() {
                Some(
                    c @ ("InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "ExpiredToken"
                    | "InvalidToken"
                    | "TokenRefreshRequired"),
                ) => StoreError::Credentials {
                    store: self.describe(),
                    reason: format!("credentials rejected ({c})"),
                },
                c => backend(format!(
                    "access denied (HTTP {}{}): the credentials may not {op} here",
                    status.unwrap_or(403),
                    c.map(|c| format!(" {c}")).unwrap_or_default()
                )),
            },
            Some(s) => backend(format!("HTTP {s}: {}", DisplayErrorContext(&e))),
            None => match &e {
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                    StoreError::Unreachable {
                        store: self.describe(),
                        op,
                        key: key.to_owned(),
                        failure: match crate::cluster::NetFailure::classify(&e) {
                            crate::cluster::NetFailure::Other(_)
                                if matches!(e, SdkError::TimeoutError(_)) =>
                            {
                                crate::cluster::NetFailure::Timeout(
                                    crate::cluster::limits().request_timeout,
                                )
                            }
                            f => f,
                        },
                    }
                }
                _ => backend(DisplayErrorContext(&e).to_string()),
            },
        }
    }
}

/// Forbids the SDK's retries of a request that failed in a way no retry mends (an untrusted
/// certificate, a host name that does not resolve, a server that does not speak TLS): the
/// same classification as the cluster's requests ([`crate::cluster::NetFailure`]).
#[derive(Debug)]
struct NoRetryOnPermanentFailure;

impl aws_sdk_s3::config::retry::ClassifyRetry for NoRetryOnPermanentFailure {
    fn classify_retry(
        &self,
        ctx: &aws_sdk_s3::config::interceptors::InterceptorContext,
    ) -> aws_sdk_s3::config::retry::RetryAction {
        use aws_sdk_s3::config::retry::RetryAction;
        match ctx.output_or_error() {
            Some(Err(e))
                if e.as_connector_error()
                    .is_some_and(|c| !crate::cluster::NetFailure::classify(c).is_transient()) =>
            {
                RetryAction::RetryForbidden
            }
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "k8s-snap: permanent network failures"
    }
}

/// The HTTP status of a raw response.
trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{} at {}", self.bucket, self.endpoint)
        } else {
            format!("s3://{}/{} at {}", self.bucket, self.prefix, self.endpoint)
        }
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Object>> {
        Box::pin(async move {
            let out = self.get_object(key).await?;
            let etag = Etag(out.e_tag().unwrap_or_default().to_owned());
            let bytes = out
                .body
                .collect()
                .await
                .map_err(|e| StoreError::Backend {
                    store: self.describe(),
                    op: "GET",
                    key: key.to_owned(),
                    reason: format!("reading the body: {e}"),
                })?
                .into_bytes()
                .to_vec();
            Ok(Object { bytes, etag })
        })
    }

    fn get_streamed<'a>(
        &'a self,
        key: &'a str,
        sink: &'a mut (dyn FnMut(bytes::Bytes) -> std::io::Result<()> + Send),
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let out = self.get_object(key).await?;
            let mut body = out.body;
            while let Some(chunk) = body.try_next().await.map_err(|e| StoreError::Backend {
                store: self.describe(),
                op: "GET",
                key: key.to_owned(),
                reason: format!("reading the body: {e}"),
            })? {
                sink(chunk).map_err(|e| StoreError::Io {
                    store: self.describe(),
                    context: format!("receiving {key}"),
                    source: e,
                })?;
            }
            Ok(())
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<ObjectMeta>> {
        Box::pin(async move {
            let full = self.full_key(key)?;
            let out = self
                .client
                .head_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
                .map_err(|e| self.err("HEAD", key, e))?;
            Ok(ObjectMeta {
                key: key.to_owned(),
                size: out.content_length().unwrap_or(0).max(0) as u64,
                last_modified: out
                    .last_modified()
                    .and_then(|t| jiff::Timestamp::from_second(t.secs()).ok()),
            })
        })
    }

    fn put_if_absent<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'a, Result<PutOutcome>> {
        Box::pin(async move {
            let full = self.full_key(key)?;
            let r = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .if_none_match("*")
                .body(ByteStream::from(bytes))
                .send()
                .await;
            match r {
                Ok(_) => Ok(PutOutcome::Created),
                Err(e) => match self.err("PUT", key, e) {
                    StoreError::PreconditionFailed { .. } => Ok(PutOutcome::AlreadyExists),
                    other => Err(other),
                },
            }
        })
    }

    fn put_if_match<'a>(
        &'a self,
        key: &'a str,
        bytes: Vec<u8>,
        expected: Option<&'a Etag>,
    ) -> BoxFuture<'a, Result<Etag>> {
        Box::pin(async move {
            let full = self.full_key(key)?;
            let mut req = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .content_type("application/json")
                .body(ByteStream::from(bytes));
            req = match expected {
                Some(etag) => req.if_match(etag.0.clone()),
                None => req.if_none_match("*"),
            };
            let out = req
                .send()
                .await
                .map_err(|e| match self.err("PUT", key, e) {
                    // If-Match on a missing key: someone deleted it; treat as a lost race.
                    StoreError::NotFound { store, key } => {
                        StoreError::PreconditionFailed { store, key }
                    }
                    other => other,
                })?;
            Ok(Etag(out.e_tag().unwrap_or_default().to_owned()))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<ObjectMeta>>> {
        Box::pin(async move {
            let full_prefix = if self.prefix.is_empty() {
                prefix.to_owned()
            } else {
                format!("{}/{prefix}", self.prefix)
            };
            let strip = if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            };
            let mut pages = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| self.err("LIST", prefix, e))?;
                for o in page.contents() {
                    let Some(k) = o.key().and_then(|k| k.strip_prefix(&strip)) else {
                        continue;
                    };
                    out.push(ObjectMeta {
                        key: k.to_owned(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        last_modified: o
                            .last_modified()
                            .and_then(|t| jiff::Timestamp::from_second(t.secs()).ok()),
                    });
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let full = self.full_key(key)?;
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&full)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => match self.err("DELETE", key, e) {
                    StoreError::NotFound { .. } => Ok(()),
                    other => Err(other),
                },
            }
        })
    }
}
