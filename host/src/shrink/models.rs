//! The models whose groups can be traced for a checkpoint without the model's code: what the
//! CLI and plans use when no groups are declared.

use super::groups::DependencyGraph;
use super::trace::trace;
use crate::error::{PruneError, Result};
use crate::layers::{self, builtin_classes, builtin_model};
use std::collections::BTreeMap;

/// The dependency groups of the built-in model `name` (or, for `"auto"`, of the one whose
/// tensors have the names and shapes of `shapes`: a state_dict's keys, pruned pairs as their
/// parameter, without `num_batches_tracked`). An error says which keys do not fit.
pub fn trace_builtin(name: &str, shapes: &BTreeMap<String, Vec<i64>>) -> Result<DependencyGraph> {
    let classes = builtin_classes(shapes);
    let model = builtin_model(name, shapes).map_err(|err| match err {
        PruneError::InvalidGroups(why) => PruneError::InvalidGroups(format!(
            "{why}; declare its groups (--groups FILE, or \"groups\" in a plan step)"
        )),
        other => other,
    })?;
    match model {
        "lenet" => trace(layers::lenet, &[1, 1, 28, 28]),
        "resnet18" => trace(
            |p| tch::vision::resnet::resnet18(p, classes),
            &[1, 3, 64, 64],
        ),
        _ => trace(
            |p| tch::vision::resnet::resnet34(p, classes),
            &[1, 3, 64, 64],
        ),
    }
}
