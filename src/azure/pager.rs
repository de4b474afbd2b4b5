//! `nextLink` paging as an explicit state machine.
//!
//! `First(url)` → fetch → `Next(nextLink)` … → `Done`. The `nextLink` is followed exactly as the
//! service returned it (it already carries `api-version` and the opaque `$skiptoken`). A page is
//! returned as raw bytes, so extract can land it exactly as received; typed decoding is the caller's.
//! A pager can be resumed from any `nextLink`, which is how a killed run picks up where it stopped.

use super::{ApiRequest, AzureClient, AzureError, governor::Family, models::NextLinkOnly};
use bytes::Bytes;
use reqwest::Method;
use url::Url;

#[derive(Clone, Debug)]
pub enum PagerState {
    First(Url),
    Next(Url),
    Done,
}

/// One page as received.
#[derive(Clone, Debug)]
pub struct RawPage {
    /// The URL this page was fetched from (the previous page's `nextLink`, or the first URL).
    pub url: String,
    pub body: Bytes,
    /// The continuation, `None` on the last page (absent, `null` or `""`).
    pub next_link: Option<String>,
    /// `204 No Content` (2024-08-01: nothing to list).
    pub no_content: bool,
}

pub struct Pager {
    client: AzureClient,
    family: Family,
    billing_account: String,
    scope: String,
    state: PagerState,
    pages: u64,
}

impl Pager {
    pub fn new(
        client: AzureClient,
        family: Family,
        billing_account: &str,
        scope: &str,
        first: Url,
    ) -> Self {
        Self {
            client,
            family,
            billing_account: billing_account.into(),
            scope: scope.into(),
            state: PagerState::First(first),
            pages: 0,
        }
    }

    /// Continues from a `nextLink` saved by an earlier run.
    pub fn resume(
        client: AzureClient,
        family: Family,
        billing_account: &str,
        scope: &str,
        next_link: Url,
    ) -> Self {
        Self {
            client,
            family,
            billing_account: billing_account.into(),
            scope: scope.into(),
            state: PagerState::Next(next_link),
            pages: 0,
        }
    }

    pub fn state(&self) -> &PagerState {
        &self.state
    }

    pub fn pages_fetched(&self) -> u64 {
        self.pages
    }

    /// Fetches the next page, or `None` when done.
    pub async fn next_page(&mut self) -> Result<Option<RawPage>, AzureError> {
        let url = match &self.state {
            PagerState::First(u) | PagerState::Next(u) => u.clone(),
            PagerState::Done => return Ok(None),
        };
        let req = ApiRequest::new(Method::GET, url.clone(), self.family)
            .keys(&self.billing_account, &self.scope);
        let resp = self.client.execute(&req).await?;
        self.pages += 1;
        if resp.status == reqwest::StatusCode::NO_CONTENT
            || resp.body.iter().all(u8::is_ascii_whitespace)
            || is_empty_object(&resp.body)
        {
            self.state = PagerState::Done;
            return Ok(Some(RawPage {
                url: url.to_string(),
                body: resp.body,
                next_link: None,
                no_content: true,
            }));
        }
        let head: NextLinkOnly = resp.parse(&req.what())?;
        let next = head.next_link.filter(|s| !s.trim().is_empty());
        self.state = match &next {
            Some(link) => {
                let next_url = self.client.service_url(&req.what(), link)?;
                if next_url == url {
                    return Err(AzureError::Decode {
                        what: req.what(),
                        reason: "nextLink points at the page itself; stopping instead of looping"
                            .into(),
                    });
                }
                PagerState::Next(next_url)
            }
            None => PagerState::Done,
        };
        Ok(Some(RawPage {
            url: url.to_string(),
            body: resp.body,
            next_link: next,
            no_content: false,
        }))
    }

    /// All remaining pages, decoded as `{value: [T]}` lists (for small lists: hierarchy, invoices).
    pub async fn collect<T: serde::de::DeserializeOwned>(mut self) -> Result<Vec<T>, AzureError> {
        let mut out = Vec::new();
        while let Some(p) = self.next_page().await? {
            if p.no_content {
                continue;
            }
            let page: super::models::ListPage<T> =
                serde_json::from_slice(&p.body).map_err(|e| AzureError::Decode {
                    what: crate::secret::redact_url(&p.url),
                    reason: e.to_string(),
                })?;
            out.extend(page.value);
        }
        Ok(out)
    }
}

fn is_empty_object(b: &[u8]) -> bool {
    let t: Vec<u8> = b
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    t == b"{}"
}
