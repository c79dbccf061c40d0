//! Modelship serving: the model server that runs in every model pod.

pub mod error;
pub mod runtime;

pub use error::{Error, Result};
