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

pub mod controlplane;
pub mod error;
pub mod faults;
pub mod harness;
pub mod hooks;
pub mod load;
pub mod models;
pub mod operator;

pub use error::{Error, Result};
