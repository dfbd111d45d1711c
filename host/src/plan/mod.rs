//! Declarative pruning of a checkpoint: a plan of steps, each a method applied to parameter
//! keys or glob patterns, run against a state_dict without the model's code.
//!
//! The format (what `tchprune apply --plan` reads):
//!
//! ```json
//! {"seed": 7, "plugins": ["plugins/libnm.so"],
//!  "steps": [{"method": "l1_unstructured", "params": ["conv*.weight"], "amount": 0.5},
//!            {"method": "global_unstructured", "pruning_method": "l1_unstructured",
//!             "params": ["fc*.weight"], "amount": 0.8}]}
//! ```
//!
//! Two steps work on dependency groups ([`crate::shrink`]): `prune_groups` (with a structured
//! `pruning_method` and its arguments) and `shrink`; both take `"model"` (a built-in model,
//! `"auto"` by default) or declared `"groups"`, and act on the groups with a writer in `params`.
//!
//! A key `P` names the tensor `P`, or the pruned pair `P_orig` + `P_mask`. Patterns use `*`
//! (any run of characters, dots included) and `?`; each must match at least one key, and the
//! keys a pattern matches are taken in sorted order. Every step is checked (patterns, methods,
//! arguments, side files) before the first one runs, so most mistakes cost nothing; a step that
//! still fails mid-way (a count larger than a tensor's units, say) fails the whole run, and
//! since [`PrunedState::apply_plan`] consumes the state, no half-pruned state survives it.

mod parse;
mod state;

pub use parse::{Plan, Step, MAX_PLAN_BYTES};
pub(crate) use state::recorded_argument;
pub use state::{PrunedState, HISTORY_METADATA_KEY};
