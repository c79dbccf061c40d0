//! End-to-end test support for Modelship.
//!
//! - [`localnode`]: a node agent and Service proxy that let a real local control plane run pods
//!   (the `localnode` binary).
//! - [`harness`]: helpers the integration tests share (namespaces, polling, HTTP through the
//!   Service proxy).
//! - [`operator`]: the operator binary as a child process per test.
//! - [`models`]: building, applying and inspecting ModelDeployments.
//! - [`load`]: bounded open-loop load through the Service proxy.
//! - [`controlplane`]: a control plane of a test's own, for cluster-wide changes.
//! - [`faults`]: a link to the API server that tests can cut, for outages and partitions.

pub mod controlplane;
pub mod error;
pub mod faults;
pub mod harness;
pub mod load;
pub mod localnode;
pub mod models;
pub mod operator;

pub use error::{Error, Result};
