//! End-to-end test support for Modelship.
//!
//! - [`harness`]: helpers the integration tests share (namespaces with a models claim,
//!   polling, HTTP to Services and pods).
//! - [`operator`]: the operator binary as a child process per test.
//! - [`models`]: building, applying and inspecting ModelDeployments.
//! - [`load`]: bounded open-loop load to a Service's ClusterIP.
//! - [`hooks`]: a webhook receiver in a pod, for notifications.
//! - [`controlplane`]: a control plane of a test's own, for cluster-wide changes.
//! - [`faults`]: a link to the API server that tests can cut, for outages and partitions.
//! - [`prometheus`]: a real Prometheus scraping a test namespace's serving pods.
//! - [`accounts`], [`audit`], [`lease`]: operators with ServiceAccounts of their own, the API
//!   server's audit log of what each did, and the leader Lease as a watch saw it.
//! - [`world`], [`kills`]: a watch on everything a rollout touches, and the operator killed at
//!   each of its phase boundaries.
//! - [`pods`]: serving pods' containers and processes on the node.

pub mod accounts;
pub mod audit;
pub mod controlplane;
pub mod error;
pub mod faults;
pub mod harness;
pub mod hooks;
pub mod kills;
pub mod lease;
pub mod load;
pub mod models;
pub mod operator;
pub mod pods;
pub mod prometheus;
pub mod world;

pub use error::{Error, Result};
