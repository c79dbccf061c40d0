//! Modelship operator: reconciles `ModelDeployment`s into Deployments, Services and an HPA,
//! and rolls model versions out with RollingUpdate, BlueGreen or Canary strategies.
//!
//! The reconcile pipeline, one module per step ([`controller`] wires them):
//!
//! | step | module | I/O |
//! |---|---|---|
//! | observe: the owned children in the watch caches | [`observe`] | cache reads |
//! | measure the candidate when analysis is due | [`analysis`] | HTTP scrape |
//! | plan: the next rollout state | [`plan`] | none |
//! | build: every child to apply or delete | [`desired`] | none |
//! | apply: server-side apply, removals last | [`apply`] | API writes |
//! | report: status (computed by [`status`]) and events | [`report`] | API writes |
//! | notify: webhook notifications claimed in status, sent after it | [`notify`] | HTTP POST |

pub mod admin;
pub mod analysis;
pub mod apply;
pub mod controller;
pub mod desired;
pub mod error;
pub mod expect;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod plan;
pub mod plugin;
pub mod report;
pub mod status;
pub mod vocabulary;
pub mod watch;

pub use error::{Error, Result};
