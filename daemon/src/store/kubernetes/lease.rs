//! Leader election with a `coordination.k8s.io/v1` Lease, as Kubernetes' own controllers do
//! (client-go's `leaderelection`): one replica per shard holds the Lease and runs discovery,
//! the engine and verification; the others wait to take it over.
//!
//! - A replica takes the Lease when nobody holds it, or when its holder has not renewed it for
//!   `lease_duration` as this replica observed it: expiry is judged by this replica's clock from
//!   the moment it last saw the Lease change, never by comparing clocks across machines.
//! - The holder renews every `retry_period`; a holder that could not renew for
//!   `renew_deadline` (shorter than `lease_duration`) stops leading on its own, before another
//!   replica may take over.
//! - Every write is a compare-and-set on the Lease's `resourceVersion`: two replicas never both
//!   believe they took it.
//! - Each takeover increments `leaseTransitions`; the holder's [`Term`] is that number, the
//!   fencing token its writes carry, so a deposed leader's late write can be told from the new
//!   one's.
//!
//! No crate: kube-rs has no leader election of its own, and the crates that add one follow
//! kube's releases late; the rules above are the whole of it.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// How the Lease is held. The defaults (10 s, 7 s, 2 s) are shorter than client-go's (15 s,
/// 10 s, 2 s) so that a crashed leader's work resumes elsewhere within 15 s: a follower takes
/// over between 8 and 14 s after the crash (the Lease's duration from the last renewal it saw,
/// which is up to one retry period either side of the crash, plus one retry period).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    /// The Lease's name: one per shard.
    pub name: String,
    /// This replica, as `holderIdentity` says it (unique among the replicas).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(7),
            retry_period: Duration::from_secs(2),
        }
    }

    /// What is wrong with the timings, if anything.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "the renew deadline ({:?}) must be shorter than the lease duration ({:?}): a leader that cannot renew must stop before another may take over",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "the retry period ({:?}) must be above zero and shorter than the renew deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        if self.identity.is_empty() {
            return Err("the replica's identity is empty".into());
        }
        Ok(())
    }
}

/// A term of leadership: the Lease's `leaseTransitions` when this replica took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Term(pub i32);

/// What [`Elector::step`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// This replica holds the Lease, in this term.
    Leading(Term),
    /// Another replica does (its identity), or the Lease is being handed over.
    Following(Option<String>),
}

/// One replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The Lease as last seen, and when (this replica's clock) it last changed.
    observed: Option<(Lease, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Result<Elector, String> {
        config.check()?;
        Ok(Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        })
    }

    fn record(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or_else(now)),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: creates the Lease, renews it, takes it over once it expired, or finds that
    /// another replica holds it. A lost compare-and-set is not an error: someone else wrote
    /// first, and this round follows.
    pub async fn step(&mut self) -> Result<Standing, kube::Error> {
        // Holding it: renew on the version last written, one request; if someone wrote since,
        // read it and decide below.
        if let Some((seen, _)) = &self.observed
            && let Some(spec) = &seen.spec
            && spec.holder_identity.as_deref() == Some(self.config.identity.as_str())
        {
            let term = spec.lease_transitions.unwrap_or(0);
            let mut next = seen.clone();
            next.spec = Some(self.record(term, spec.acquire_time.clone()));
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &next)
                .await
            {
                Ok(written) => {
                    self.observed = Some((written, Instant::now()));
                    return Ok(Standing::Leading(Term(term)));
                }
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observed = Some((created, Instant::now()));
                    Ok(Standing::Leading(Term(0)))
                }
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(Standing::Following(None)),
                Err(e) => Err(e),
            };
        };
        // When it last changed, as this replica saw it.
        let changed_at = match &self.observed {
            Some((seen, at))
                if seen.metadata.resource_version == current.metadata.resource_version =>
            {
                *at
            }
            _ => Instant::now(),
        };
        self.observed = Some((current.clone(), changed_at));
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let transitions = spec.lease_transitions.unwrap_or(0);
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let mine = holder.as_deref() == Some(self.config.identity.as_str());
        let expired = changed_at.elapsed() >= duration;
        if !mine && holder.is_some() && !expired {
            return Ok(Standing::Following(holder));
        }
        let (term, acquired) = if mine {
            (transitions, spec.acquire_time.clone())
        } else {
            (transitions + 1, None)
        };
        let mut next = current.clone();
        next.spec = Some(self.record(term, acquired));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                self.observed = Some((written, Instant::now()));
                Ok(Standing::Leading(Term(term)))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Standing::Following(holder)),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (on shutdown), so another replica takes it at once instead of after
    /// it expires: holder cleared, duration 1 s, as client-go's `ReleaseOnCancel`. Only if this
    /// replica still holds it.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let mut next = current;
        next.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            renew_time: Some(now()),
            ..spec
        });
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs the election until `stop` turns true: `leading` says the current term while this
    /// replica leads, `None` while it does not. Leadership ends when a renewal fails, or when
    /// renewals have not succeeded for `renew_deadline`; the Lease is released at the end.
    pub async fn run(
        mut self,
        leading: watch::Sender<Option<Term>>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut last_renewed: Option<Instant> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let standing = tokio::time::timeout(self.config.renew_deadline, self.step()).await;
            let now_leading = match standing {
                Ok(Ok(Standing::Leading(term))) => {
                    last_renewed = Some(Instant::now());
                    Some(term)
                }
                Ok(Ok(Standing::Following(_))) => {
                    last_renewed = None;
                    None
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "the Lease could not be read or written");
                    // A leader keeps leading until its renew deadline passes.
                    let current = *leading.borrow();
                    current.filter(|_| {
                        last_renewed.is_some_and(|at| at.elapsed() < self.config.renew_deadline)
                    })
                }
                Err(_) => None,
            };
            leading.send_if_modified(|was| {
                let changed = *was != now_leading;
                if changed {
                    match now_leading {
                        Some(term) => {
                            tracing::info!(lease = %self.config.name, term = term.0, "leading")
                        }
                        None if was.is_some() => {
                            tracing::warn!(lease = %self.config.name, "no longer leading")
                        }
                        None => {}
                    }
                }
                *was = now_leading;
                changed
            });
            tokio::select! {
                _ = tokio::time::sleep(self.config.retry_period) => {}
                _ = stop.changed() => {}
            }
        }
        leading.send_replace(None);
        if let Err(e) = self.release().await {
            tracing::warn!(lease = %self.config.name, error = %e, "the Lease could not be released; it expires by itself");
        }
    }
}
