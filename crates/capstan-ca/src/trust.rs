//! The trust bundle: every root a workload must trust while the CA's roots change.
//!
//! It is the roots of `root-cert.pem`, in their order, plus roots that left the file but
//! under which this CA issued certificates that may still be valid: such a root is kept until
//! the longest lifetime the CA grants has passed since it last issued under it (or until the
//! root itself expires). A root that left the file and under which this process never issued
//! is dropped at once: removing it is the operator's statement that it is no longer trusted.
//!
//! Istio's documented root rotation keeps both roots in `root-cert.pem` for the whole
//! transition; the retention here is what lets a one-step switch of `cacerts` (new root,
//! new intermediate, old root removed) still verify the certificates already issued. It is
//! kept in memory: after a restart only `root-cert.pem` counts.

use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;

use crate::pem;

/// Whether, and until when, the CA issued certificates under a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuance {
    /// The CA's signing certificate chains to this root now.
    Current,
    /// The CA issued under this root until then (in this process's life).
    Until(SystemTime),
    /// This process never issued under it.
    Never,
}

/// One root of the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedRoot {
    cert: CertificateDer<'static>,
    not_after: SystemTime,
    issuance: Issuance,
    /// `None` while `root-cert.pem` lists the root; afterwards, when it leaves the bundle.
    kept_until: Option<SystemTime>,
}

impl TrustedRoot {
    /// A root as listed in `root-cert.pem`, expiring at `not_after`.
    pub(crate) fn listed(cert: CertificateDer<'static>, not_after: SystemTime) -> Self {
        Self {
            cert,
            not_after,
            issuance: Issuance::Never,
            kept_until: None,
        }
    }

    /// The certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// When the certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Whether the CA issued under it.
    pub fn issuance(&self) -> Issuance {
        self.issuance
    }

    /// `None` while `root-cert.pem` lists it; for a root kept after it left the file, when it
    /// will be dropped.
    pub fn kept_until(&self) -> Option<SystemTime> {
        self.kept_until
    }
}

/// The roots workloads trust, in the order they are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    roots: Vec<TrustedRoot>,
    certs: Vec<CertificateDer<'static>>,
    pem: String,
}

impl TrustBundle {
    /// The bundle of a CA loaded without history: the listed roots, `signing` marked as the
    /// one issued under now.
    pub(crate) fn new(listed: Vec<TrustedRoot>, signing: &CertificateDer<'_>) -> Self {
        let roots = listed
            .into_iter()
            .map(|mut r| {
                if r.cert == *signing {
                    r.issuance = Issuance::Current;
                }
                r
            })
            .collect();
        Self::from_roots(roots)
    }

    fn from_roots(roots: Vec<TrustedRoot>) -> Self {
        let certs: Vec<_> = roots.iter().map(|r| r.cert.clone()).collect();
        let pem = pem::bundle_pem(&certs);
        Self { roots, certs, pem }
    }

    /// The bundle after the CA's files changed at `now`: `next` is the new CA's own bundle
    /// (its listed roots, its signing root marked); `self` is the previous one. A root that
    /// was issued under and is no longer listed is kept for `retention` after the last
    /// issuance (the longest lifetime the CA grants), at most until it expires.
    pub(crate) fn succeed(&self, next: &TrustBundle, retention: Duration, now: SystemTime) -> Self {
        // What the previous version means for each of its roots from now on.
        let stopped = |r: &TrustedRoot| match r.issuance {
            Issuance::Current => Issuance::Until(now),
            other => other,
        };
        let mut roots: Vec<TrustedRoot> = next
            .roots
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if r.issuance != Issuance::Current {
                    if let Some(before) = self.roots.iter().find(|p| p.cert == r.cert) {
                        r.issuance = stopped(before);
                    }
                }
                r
            })
            .collect();
        for old in &self.roots {
            if next.roots.iter().any(|r| r.cert == old.cert) {
                continue;
            }
            let kept_until = match (old.kept_until, stopped(old)) {
                // Already retained: its date stands.
                (Some(until), _) => until,
                (None, Issuance::Until(last)) => (last + retention).min(old.not_after),
                (None, _) => continue,
            };
            if kept_until > now {
                roots.push(TrustedRoot {
                    issuance: stopped(old),
                    kept_until: Some(kept_until),
                    ..old.clone()
                });
            }
        }
        Self::from_roots(roots)
    }

    /// The bundle without the retained roots whose time has come, or `None` if none has.
    pub(crate) fn without_expired(&self, now: SystemTime) -> Option<Self> {
        let keep = |r: &TrustedRoot| r.kept_until.is_none_or(|until| until > now);
        if self.roots.iter().all(keep) {
            return None;
        }
        Some(Self::from_roots(
            self.roots.iter().filter(|r| keep(r)).cloned().collect(),
        ))
    }

    /// When the next retained root leaves the bundle.
    pub fn next_expiry(&self) -> Option<SystemTime> {
        self.roots.iter().filter_map(|r| r.kept_until).min()
    }

    /// Every root, with what is known of it.
    pub fn roots(&self) -> &[TrustedRoot] {
        &self.roots
    }

    /// The certificates, listed roots first.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The certificates as one PEM bundle.
    pub fn pem(&self) -> &str {
        &self.pem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(n: u8) -> CertificateDer<'static> {
        CertificateDer::from(vec![n])
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn at(hours: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + HOUR * (1000 + hours as u32)
    }

    /// A CA's own bundle: roots `listed` (expiring far away), signing under `signing`.
    fn own(listed: &[u8], signing: u8) -> TrustBundle {
        let roots = listed
            .iter()
            .map(|n| TrustedRoot::listed(cert(*n), at(10_000)))
            .collect();
        TrustBundle::new(roots, &cert(signing))
    }

    /// Each root as (its byte, issuance, kept until).
    type Summary = Vec<(u8, Issuance, Option<SystemTime>)>;
    /// Successive CA versions, as (listed roots, signing root).
    type Versions<'a> = &'a [(&'a [u8], u8)];

    fn summary(b: &TrustBundle) -> Summary {
        b.roots()
            .iter()
            .map(|r| (r.cert()[0], r.issuance(), r.kept_until()))
            .collect()
    }

    /// Istio's procedure (A → A+B signing A → A+B signing B → B), then the one-step switch
    /// (A → B signing B), each step 1 h after the last, retention 24 h.
    #[test]
    fn rotations_keep_what_was_issued_under() {
        use Issuance::*;
        let retention = 24 * HOUR;
        let steps: &[(&str, Versions, Summary)] = &[
            (
                "add the new root, still signing under the old",
                &[(&[1], 1), (&[1, 2], 1)],
                vec![(1, Current, None), (2, Never, None)],
            ),
            (
                "sign under the new root",
                &[(&[1], 1), (&[1, 2], 1), (&[2, 1], 2)],
                vec![(2, Current, None), (1, Until(at(2)), None)],
            ),
            (
                "remove the old root: kept 24 h after the last issuance under it",
                &[(&[1], 1), (&[1, 2], 1), (&[2, 1], 2), (&[2], 2)],
                vec![(2, Current, None), (1, Until(at(2)), Some(at(26)))],
            ),
            (
                "one step",
                &[(&[1], 1), (&[2], 2)],
                vec![(2, Current, None), (1, Until(at(1)), Some(at(25)))],
            ),
            (
                "a root never issued under leaves at once",
                &[(&[1, 3], 1), (&[1], 1)],
                vec![(1, Current, None)],
            ),
            (
                "a retained root listed again is listed",
                &[(&[1], 1), (&[2], 2), (&[2, 1], 2)],
                vec![(2, Current, None), (1, Until(at(1)), None)],
            ),
        ];
        for (name, versions, want) in steps {
            let mut bundle = own(versions[0].0, versions[0].1);
            for (i, (listed, signing)) in versions.iter().enumerate().skip(1) {
                bundle = bundle.succeed(&own(listed, *signing), retention, at(i as u64));
            }
            assert_eq!(summary(&bundle), *want, "{name}");
        }
    }

    #[test]
    fn retained_roots_leave_on_time_and_never_outlive_themselves() {
        let retention = 24 * HOUR;
        let mut short_lived = own(&[1], 1);
        short_lived.roots[0].not_after = at(5);
        let bundle = short_lived.succeed(&own(&[2], 2), retention, at(1));
        assert_eq!(bundle.next_expiry(), Some(at(5)), "the root's own expiry");
        assert_eq!(bundle.certificates().len(), 2);
        assert!(bundle.without_expired(at(4)).is_none());
        let after = bundle.without_expired(at(5)).expect("dropped at its date");
        assert_eq!(after.certificates(), &[cert(2)]);
        assert_eq!(after.pem(), pem::bundle_pem(&[cert(2)]));
        assert_eq!(after.next_expiry(), None);
        // A retained root already past its date is not kept by the next change.
        let later = bundle.succeed(&own(&[2, 3], 2), retention, at(6));
        assert_eq!(later.certificates(), &[cert(2), cert(3)]);
    }
}
