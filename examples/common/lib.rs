//! Shared pieces of the examples: the tutorial walkthrough and its FooBar method.
//!
//! The walkthrough lives here rather than in `tutorial.rs` so that other front ends (the
//! `tchprune demo` command) can run the very same steps.

#![warn(missing_docs)]

pub mod foobar;
pub mod tutorial;
