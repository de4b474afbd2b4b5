//! Client-side pacing: a sliding-window log per (rule, key), so calls never exceed Azure's documented
//! limits and never wait while budget remains. Every attempt, retries included, takes a slot, because
//! the service counts every call.
//!
//! Documented limits (`shared/azure-api/README.md` §5, §7b, §8, §10, §11):
//! usage details 6/min per billing account and 2/min per `$skiptoken` URL; price sheet 30/min per
//! billing account; Cost Details 2/min, 10/h, 50/day per scope, 5/min per billing account and 30/min
//! per application; Query 12 QPU/10 s, 60/min, 600/h per tenant; ARM reads 12 000/h per tenant.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Which API family a call belongs to; limits and retry headers differ per family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Billing,
    Usage,
    PriceSheet,
    CostDetails,
    Query,
    Budgets,
    Policy,
    Blob,
}

/// What a limit counts per.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Per {
    BillingAccount,
    Scope,
    Url,
    Tenant,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub family: Family,
    pub per: Per,
    pub limit: u32,
    pub window: Duration,
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub rules: Vec<Rule>,
    /// Added to every window (or 2 % of the window when more), so the client's spacing survives
    /// network and scheduling jitter.
    pub margin: Duration,
}

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

impl Limits {
    /// Azure's documented limits.
    pub fn azure() -> Self {
        use Family::*;
        use Per::*;
        let r = |family, per, limit, window| Rule {
            family,
            per,
            limit,
            window,
        };
        Self {
            rules: vec![
                r(Usage, BillingAccount, 6, MIN),
                r(Usage, Url, 2, MIN),
                r(PriceSheet, BillingAccount, 30, MIN),
                r(CostDetails, Scope, 2, MIN),
                r(CostDetails, Scope, 10, HOUR),
                r(CostDetails, Scope, 50, DAY),
                r(CostDetails, BillingAccount, 5, MIN),
                r(CostDetails, Tenant, 30, MIN),
                r(Query, Tenant, 12, Duration::from_secs(10)),
                r(Query, Tenant, 60, MIN),
                r(Query, Tenant, 600, HOUR),
                r(Billing, Tenant, 12_000, HOUR),
                r(Policy, Tenant, 12_000, HOUR),
                r(Budgets, Tenant, 1_200, HOUR),
            ],
            margin: Duration::from_millis(50),
        }
    }

    /// The same limits with time running `factor` times faster (for a simulator that does the same).
    pub fn scaled(mut self, factor: f64) -> Self {
        if factor > 0.0 && factor.is_finite() {
            for r in &mut self.rules {
                r.window = r.window.div_f64(factor);
            }
            self.margin = self
                .margin
                .div_f64(factor.max(1.0))
                .max(Duration::from_millis(5));
        }
        self
    }

    /// No pacing at all.
    pub fn none() -> Self {
        Self {
            rules: Vec::new(),
            margin: Duration::ZERO,
        }
    }
}

/// The keys a call is counted under.
#[derive(Clone, Debug, Default)]
pub struct CallKeys {
    pub billing_account: String,
    pub scope: String,
    pub url: String,
}

pub struct Governor {
    limits: Limits,
    log: Mutex<HashMap<(usize, String), VecDeque<Instant>>>,
}

impl Governor {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            log: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until a call of `family` under `keys` fits every rule, then records it. Returns the time waited.
    pub async fn acquire(&self, family: Family, keys: &CallKeys) -> Duration {
        let started = Instant::now();
        loop {
            let wake = {
                let mut log = self.log.lock().await;
                let now = Instant::now();
                let mut earliest = now;
                let applicable: Vec<(usize, String)> = self
                    .limits
                    .rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.family == family)
                    .map(|(i, r)| {
                        let key = match r.per {
                            Per::BillingAccount => keys.billing_account.clone(),
                            Per::Scope => keys.scope.clone(),
                            Per::Url => keys.url.clone(),
                            Per::Tenant => String::new(),
                        };
                        (i, key)
                    })
                    .collect();
                for (i, key) in &applicable {
                    let rule = &self.limits.rules[*i];
                    // At least 2 % of the window: at a simulator's scaled time a fixed margin
                    // shrinks below the scheduling jitter of a busy machine (measured: 429s at 60x).
                    let window = rule.window + self.limits.margin.max(rule.window / 50);
                    let q = log.entry((*i, key.clone())).or_default();
                    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                        q.pop_front();
                    }
                    if q.len() >= rule.limit as usize
                        && let Some(oldest) = q.get(q.len() - rule.limit as usize)
                    {
                        earliest = earliest.max(*oldest + window);
                    }
                }
                if earliest <= now {
                    for k in applicable {
                        log.entry(k).or_default().push_back(now);
                    }
                    return started.elapsed();
                }
                earliest
            };
            tokio::time::sleep_until(wake).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_to_the_window_without_idling() {
        let g = Governor::new(Limits {
            rules: vec![Rule {
                family: Family::Usage,
                per: Per::BillingAccount,
                limit: 3,
                window: MIN,
            }],
            margin: Duration::ZERO,
        });
        let k = CallKeys {
            billing_account: "a".into(),
            ..Default::default()
        };
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                g.acquire(Family::Usage, &k).await,
                Duration::ZERO,
                "budget left: no wait"
            );
        }
        g.acquire(Family::Usage, &k).await;
        assert_eq!(
            t0.elapsed(),
            MIN + MIN / 50,
            "fourth call waits one window and the 2 % margin"
        );
        // another billing account has its own budget; another family is not limited
        let other = CallKeys {
            billing_account: "b".into(),
            ..Default::default()
        };
        assert_eq!(g.acquire(Family::Usage, &other).await, Duration::ZERO);
        assert_eq!(g.acquire(Family::Blob, &k).await, Duration::ZERO);
    }
}
