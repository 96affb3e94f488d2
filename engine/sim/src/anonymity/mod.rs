//! Anonymity analysis on the node's own code (issue: `loopix sim`): single-mix entropy,
//! Theorem 1, the network-wide challenge experiment, and a parameter calculator.

pub mod mix_entropy;
pub mod mix_harness;
pub mod network_gpa;
pub mod params_calc;
pub mod pool_model;
pub mod theorem1;
