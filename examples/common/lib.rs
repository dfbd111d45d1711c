//! Shared pieces of the examples: the tutorial walkthrough and its FooBar method, the data, a
//! tch model pruned as it is, and the Fashion-MNIST recipe.
//!
//! The walkthrough lives here rather than in `tutorial.rs` so that other front ends (the
//! `tchprune demo` command) can run the very same steps.

#![warn(missing_docs)]

pub mod corpus;
pub mod data;
pub mod fashion;
pub mod foobar;
pub mod tch_model;
pub mod tiny_llm;
pub mod tutorial;
