//! Leader election with a `coordination.k8s.io/v1` Lease in the controller's namespace.
//!
//! Owns: acquiring, renewing and releasing the Lease. A standby replica polls until the
//! holder stops renewing for `lease_duration`, then takes over. The leader that cannot renew
//! before its lease runs out reports [`LeaderError::Lost`]; the caller stops (and the process
//! exits) so two leaders never work at once for long.
//! Must not touch: CRs.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// Why leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Reading or writing the Lease failed.
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The Lease was not renewed in time: this replica is no longer the leader.
    #[error("lease {namespace}/{name}: lost leadership (not renewed within {seconds}s)")]
    Lost {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// The lease duration, in seconds.
        seconds: u64,
    },
}

/// One replica's view of the Lease.
pub(crate) struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    lease_duration: Duration,
    /// The other holder's last record (holder, renewTime) and when *we* first saw it: expiry
    /// is judged on our own clock (as client-go does), so clock skew between replicas does
    /// not matter.
    observed: std::sync::Mutex<Option<(String, tokio::time::Instant)>>,
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            observed: std::sync::Mutex::new(None),
        }
    }

    fn retry_period(&self) -> Duration {
        (self.lease_duration / 3).max(Duration::from_millis(200))
    }

    fn err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// Waits until this replica holds the Lease.
    pub(crate) async fn acquire(&self) {
        let mut logged = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {
                    if !logged {
                        tracing::info!(lease = %self.name, "standby: another replica holds the lease");
                        logged = true;
                    }
                }
                Err(e) => tracing::warn!("leader election: {e}"),
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// Renews the Lease until it is lost; only returns on loss.
    pub(crate) async fn keep_renewing(&self) -> LeaderError {
        let mut last_renew = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.retry_period()).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renew = tokio::time::Instant::now(),
                Ok(false) => {
                    return LeaderError::Lost {
                        namespace: self.namespace.clone(),
                        name: self.name.clone(),
                        seconds: self.lease_duration.as_secs(),
                    };
                }
                Err(e) => {
                    tracing::warn!("renewing the lease: {e}");
                    if last_renew.elapsed() >= self.lease_duration {
                        return LeaderError::Lost {
                            namespace: self.namespace.clone(),
                            name: self.name.clone(),
                            seconds: self.lease_duration.as_secs(),
                        };
                    }
                }
            }
        }
    }

    /// Gives the Lease up (on a clean shutdown) so a standby takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
                spec.holder_identity = None;
                spec.renew_time = None;
                if let Err(e) = self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    tracing::warn!("releasing the lease: {}", self.err(e));
                }
            }
        }
    }

    /// One round: take a free/expired Lease, renew our own; `false` if someone else holds it.
    async fn try_acquire_or_renew(&self) -> Result<bool, LeaderError> {
        let now = jiff::Timestamp::now();
        let seconds = i32::try_from(self.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.err(e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let holder_free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let expired = {
            let record = format!(
                "{:?}/{:?}",
                spec.holder_identity,
                spec.renew_time.as_ref().map(|t| t.0)
            );
            let held_for = Duration::from_secs(
                spec.lease_duration_seconds
                    .and_then(|d| u64::try_from(d).ok())
                    .unwrap_or(self.lease_duration.as_secs()),
            );
            let mut observed = self
                .observed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match observed.as_ref() {
                Some((r, at)) if *r == record => at.elapsed() > held_for,
                _ => {
                    *observed = Some((record, tokio::time::Instant::now()));
                    false
                }
            }
        };
        if !ours && !holder_free && !expired {
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else wrote the Lease first (resourceVersion conflict).
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }
}
