//! # costlake
//!
//! Turns a Microsoft partner's Azure billing data (MCA / MPA, CSP "Azure plan") into a clean,
//! hive-partitioned Parquet lake. This page is the architecture map.
//!
//! ```text
//! cli ─► pipeline ─► extract ─► azure ─► auth
//!                  ├► transform          (polars; reads landed data only, never the network)
//!                  └► load ─► storage     (object_store: file, az/abfss, s3, gs, memory)
//!         all of them ─► state, landing, config, ids, error
//! simulate ─► (serves the Azure contract; shares only the wire models with azure)
//! ```
//!
//! What exists today:
//!
//! - [`auth`]: credentials (client secret, environment, workload identity, managed identity, Azure CLI,
//!   and a chain of them) and a token cache that refreshes before expiry and after a 401.
//! - [`azure`]: the client. Every call goes through [`azure::AzureClient::execute`]: client-side pacing
//!   to Azure's documented limits ([`azure::governor`]), bounded retries that honour every throttling
//!   header ([`azure::retry`]), `nextLink` paging ([`azure::pager`]) and `202`/`Location` polling
//!   ([`azure::poller`]) as explicit state machines, typed tolerant models ([`azure::models`]).
//!   `azure` never imports polars.
//! - [`simulate`]: an Azure simulator speaking the same contract, with a deterministic generator that
//!   also knows the truth (counts, exact sums), Azure's rate limits and fault injection.
//! - [`pipeline`]: a pipeline file ([`pipeline::config`]) run as three resumable stages:
//!   [`extract`] lands raw responses with a ledger per work unit; [`transform`] turns landed data
//!   (only landed data: it never imports the client) into polars frames, joins usage to prices and
//!   reconciles invoices; [`load`] publishes hive partitions atomically and idempotently through
//!   [`storage`] (object_store: local, Azure Blob/ADLS, S3, GCS, memory).
//! - [`ids`]: every API value that becomes a path segment is percent-encoded there.
//! - [`manage`]: the partner's management calls (customer policy, budgets as code, cost queries).
//! - [`secret`]: types that redact client secrets, bearer tokens and SAS signatures wherever shown.
//! - [`config`]: clouds and endpoints (http only to loopback).
//! - [`cli`]: the command line.
//!
//! Rules every module follows: no `unwrap`/`expect` outside tests; money is `Decimal`, never `f64`;
//! errors say what was attempted, on what, and what to do; secrets never reach a log line or error.

pub mod auth;
pub mod azure;
pub mod cli;
pub mod config;
pub mod error;
pub mod extract;
pub mod ids;
pub mod load;
pub mod manage;
pub mod pipeline;
pub mod secret;
pub mod simulate;
pub mod storage;
pub mod transform;

pub use error::{Error, Result};
