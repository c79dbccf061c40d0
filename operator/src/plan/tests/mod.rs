//! Tests of the planner as a whole: shared fixtures, and the simulated cluster that drives
//! every strategy through whole rollouts. Each decision's own table lives beside it
//! (`canary/tests.rs`, `bluegreen/tests.rs`).

pub mod fixtures;
mod sim;
