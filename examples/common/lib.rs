//! Shared pieces of the examples: the tutorial walkthrough and its FooBar method, the data,
//! and a tch model pruned as it is.
//!
//! The walkthrough lives here rather than in `tutorial.rs` so that other front ends (the
//! `tchprune demo` command) can run the very same steps.

#![warn(missing_docs)]

pub mod data;
pub mod foobar;
pub mod tch_model;
pub mod tutorial;
