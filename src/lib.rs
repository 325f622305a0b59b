//! tuningfork: a fully local optimization appliance for LLM prompt programs.
//!
//! The library holds everything; the `tuningfork` binary only parses arguments and calls it.
//! See `ARCHITECTURE.md` for the map of modules and the invariants they keep.

pub mod artifact;
pub mod audit;
pub mod bench;
pub mod corpus;
pub mod dataset;
pub mod dspy;
pub mod engine;
pub mod eval;
pub mod gbnf;
pub mod generator;
pub mod lm;
pub mod metrics;
pub mod models;
pub mod observe;
pub mod optimize;
pub mod program;
pub mod queue;
pub mod random;
pub mod report;
pub mod retriever;
pub mod serve;
pub mod store;
pub mod task;
pub mod workspace;

/// The README's Rust examples, compiled with the doc tests so that they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
