//! Pruning methods loaded at run time from `cdylib` plugins.
//!
//! A plugin is built against `tchprune-plugin-api` (no libtorch) and exports one root module.
//! [`load`] opens the file with `libloading`, lets abi_stable check the plugin-api version and
//! the layout of every type crossing the boundary, and wraps each method the plugin declares
//! in a [`Registered`](crate::Registered) entry, so the registry treats plugin and built-in
//! methods alike. A built plugin method is a [`PruningMethod`](crate::PruningMethod): the
//! container, global pruning and rollback use it with no special case.
//!
//! Plugins stay loaded until the process exits: a method built from one may live anywhere
//! (in a module's history, say), and unloading a Rust library with live thread-locals is not
//! sound.

mod loader;
mod method;

pub use loader::{load, load_dir, plugin_files};
pub use method::PluginMethod;
pub use tchprune_plugin_api::PLUGIN_API_VERSION;
