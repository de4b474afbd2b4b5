//! The one integration-test binary (it compiles and links once): HTTP behaviour against the
//! simulator, end to end.

// Test helpers panic on unexpected results by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod azurite;
mod common;
mod crash;
mod crawl;
mod credentials;
mod endpoints;
mod faults;
mod hostile;
mod manage;
mod pipeline;
mod security;
