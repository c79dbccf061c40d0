//! Modelship operator: reconciles `ModelDeployment`s into Deployments, Services and an HPA,
//! and rolls model versions out with RollingUpdate, BlueGreen or Canary strategies.

pub mod admin;
pub mod analysis;
pub mod controller;
pub mod desired;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod plan;
pub mod plugin;
pub mod status;

pub use error::{Error, Result};
