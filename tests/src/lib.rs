//! End-to-end test support for Modelship.
//!
//! - [`localnode`]: a node agent and Service proxy that let a real local control plane run pods
//!   (the `localnode` binary).
//! - [`harness`]: helpers the integration tests share (namespaces, polling, HTTP through the
//!   Service proxy).

pub mod error;
pub mod harness;
pub mod localnode;

pub use error::{Error, Result};
