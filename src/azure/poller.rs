//! Long-running operations, ARM "Location" flavour, as an explicit state machine.
//!
//! `Start` (POST) → `200` done | `204` no data | `202` → `Waiting { url, after }` → GET url →
//! `202` again (maybe with a new `Location`) | `200` done. `Azure-AsyncOperation` is preferred over
//! `Location` when present. The poll URL is used verbatim, never rebuilt. Waits honour `Retry-After`
//! (and its siblings) and the whole operation is bounded by `poll_timeout`.

use super::{ApiRequest, ApiResponse, AzureClient, AzureError};
use reqwest::{Method, StatusCode};
use std::time::{Duration, Instant};
use url::Url;

#[derive(Debug)]
pub enum PollState {
    Start(ApiRequest),
    Waiting {
        url: Url,
        after: Duration,
        async_operation: bool,
    },
    Done(Outcome),
}

#[derive(Debug)]
pub enum Outcome {
    /// The final `200` response.
    Ready(ApiResponse),
    /// `204`: the operation has nothing to return.
    NoData,
}

pub struct Poller {
    client: AzureClient,
    state: PollState,
    started: Instant,
    template: ApiRequest,
    polls: u32,
}

impl Poller {
    pub fn new(client: AzureClient, start: ApiRequest) -> Self {
        let template = start.clone();
        Self {
            client,
            state: PollState::Start(start),
            started: Instant::now(),
            template,
            polls: 0,
        }
    }

    /// Resumes polling a `Location` saved by an earlier run.
    pub fn resume(client: AzureClient, template: ApiRequest, location: Url) -> Self {
        Self {
            client,
            state: PollState::Waiting {
                url: location,
                after: Duration::ZERO,
                async_operation: false,
            },
            started: Instant::now(),
            template,
            polls: 0,
        }
    }

    /// The poll URL once the operation has started (for a ledger).
    pub fn location(&self) -> Option<&Url> {
        match &self.state {
            PollState::Waiting { url, .. } => Some(url),
            _ => None,
        }
    }

    pub fn polls(&self) -> u32 {
        self.polls
    }

    /// Advances one step; returns the outcome when done.
    pub async fn step(&mut self) -> Result<Option<Outcome>, AzureError> {
        let limit = self.client.options().poll_timeout;
        let state = std::mem::replace(&mut self.state, PollState::Done(Outcome::NoData));
        let next = match state {
            PollState::Done(o) => return Ok(Some(o)),
            PollState::Start(req) => {
                let resp = self.client.execute(&req).await?;
                self.state_from(&req.what(), resp, None)?
            }
            PollState::Waiting {
                url,
                after,
                async_operation,
            } => {
                if self.started.elapsed() + after > limit {
                    return Err(AzureError::PollTimeout {
                        what: self.template.what(),
                        waited: self.started.elapsed(),
                    });
                }
                tokio::time::sleep(after).await;
                self.polls += 1;
                let mut req = ApiRequest::new(Method::GET, url.clone(), self.template.family);
                req.keys = self.template.keys.clone();
                req.expect_json = true;
                let resp = self.client.execute(&req).await?;
                if async_operation && resp.status == StatusCode::OK {
                    // Azure-AsyncOperation bodies carry a status; keep polling while it runs.
                    #[derive(serde::Deserialize)]
                    struct S {
                        status: Option<String>,
                        error: Option<super::models::ErrorDetail>,
                    }
                    let s: S = resp.parse(&req.what())?;
                    match s.status.as_deref().map(str::to_ascii_lowercase).as_deref() {
                        Some("succeeded") | None => {}
                        Some("failed") | Some("canceled") | Some("cancelled") => {
                            let e = s.error.unwrap_or_default();
                            return Err(AzureError::OperationFailed {
                                what: self.template.what(),
                                status: s.status.unwrap_or_default(),
                                message: format!(
                                    "{}: {}",
                                    e.code.unwrap_or_default(),
                                    e.message.unwrap_or_default()
                                ),
                            });
                        }
                        Some(_) => {
                            let after = self.wait_of(&resp);
                            self.state = PollState::Waiting {
                                url,
                                after,
                                async_operation,
                            };
                            return Ok(None);
                        }
                    }
                }
                // A 202 without a new Location keeps polling the same URL.
                self.state_from(&req.what(), resp, Some((&url, async_operation)))?
            }
        };
        if let PollState::Done(o) = next {
            return Ok(Some(o));
        }
        self.state = next;
        Ok(None)
    }

    /// Runs to completion.
    pub async fn wait(mut self) -> Result<Outcome, AzureError> {
        loop {
            if let Some(o) = self.step().await? {
                return Ok(o);
            }
        }
    }

    fn wait_of(&self, resp: &ApiResponse) -> Duration {
        super::retry::retry_after(&resp.headers)
            .unwrap_or(self.client.options().default_poll_interval)
    }

    fn state_from(
        &self,
        what: &str,
        resp: ApiResponse,
        current: Option<(&Url, bool)>,
    ) -> Result<PollState, AzureError> {
        match resp.status {
            StatusCode::OK | StatusCode::CREATED => Ok(PollState::Done(Outcome::Ready(resp))),
            StatusCode::NO_CONTENT => Ok(PollState::Done(Outcome::NoData)),
            StatusCode::ACCEPTED => {
                let (link, async_operation) =
                    match (resp.header("azure-asyncoperation"), resp.header("location")) {
                        (Some(a), _) => (a.to_owned(), true),
                        (None, Some(l)) => (l.to_owned(), false),
                        (None, None) => match current {
                            Some((url, a)) => (url.to_string(), a),
                            None => {
                                return Err(AzureError::Decode {
                                    what: what.to_owned(),
                                    reason: "202 without Location or Azure-AsyncOperation".into(),
                                });
                            }
                        },
                    };
                let url = self.client.service_url(what, &link)?;
                Ok(PollState::Waiting {
                    url,
                    after: self.wait_of(&resp),
                    async_operation,
                })
            }
            other => Err(AzureError::Decode {
                what: what.to_owned(),
                reason: format!("unexpected HTTP {other} while polling"),
            }),
        }
    }
}
