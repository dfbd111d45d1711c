//! The models whose groups can be traced for a checkpoint without the model's code: what the
//! CLI and plans use when no groups are declared.

use super::groups::DependencyGraph;
use super::trace::trace;
use crate::error::{PruneError, Result};
use crate::layers;
use std::collections::BTreeMap;
use tch::{nn, Device};

/// The built-in models, by the name a plan or the CLI gives: the seed's LeNet and tch's
/// (torchvision's) ResNet-18 and ResNet-34, any number of classes.
pub const BUILTIN_MODELS: [&str; 3] = ["lenet", "resnet18", "resnet34"];

/// The dependency groups of the built-in model `name` (or, for `"auto"`, of the one whose
/// tensors have the names and shapes of `shapes`: a state_dict's keys, pruned pairs as their
/// parameter, without `num_batches_tracked`). An error says which keys do not fit.
pub fn trace_builtin(name: &str, shapes: &BTreeMap<String, Vec<i64>>) -> Result<DependencyGraph> {
    let names: Vec<&str> = match name {
        "auto" => BUILTIN_MODELS.to_vec(),
        name if BUILTIN_MODELS.contains(&name) => vec![name],
        other => {
            return Err(PruneError::InvalidGroups(format!(
                "no built-in model '{other}' (there are auto, {})",
                BUILTIN_MODELS.join(", ")
            )))
        }
    };
    let classes = shapes
        .get("fc.weight")
        .and_then(|s| s.first().copied())
        .unwrap_or(10);
    let mut mismatches = Vec::new();
    for candidate in names {
        let (model_shapes, input) = match candidate {
            "lenet" => (variable_shapes(layers::lenet), [1, 1, 28, 28]),
            "resnet18" => (
                variable_shapes(|p| tch::vision::resnet::resnet18(p, classes)),
                [1, 3, 64, 64],
            ),
            _ => (
                variable_shapes(|p| tch::vision::resnet::resnet34(p, classes)),
                [1, 3, 64, 64],
            ),
        };
        match difference(&model_shapes, shapes) {
            None => {
                return match candidate {
                    "lenet" => trace(layers::lenet, &input),
                    "resnet18" => trace(|p| tch::vision::resnet::resnet18(p, classes), &input),
                    _ => trace(|p| tch::vision::resnet::resnet34(p, classes), &input),
                }
            }
            Some(why) => mismatches.push(format!("not {candidate}: {why}")),
        }
    }
    Err(PruneError::InvalidGroups(format!(
        "the checkpoint is not a built-in model ({}); declare its groups",
        mismatches.join("; ")
    )))
}

fn variable_shapes<M>(build: impl FnOnce(&nn::Path) -> M) -> BTreeMap<String, Vec<i64>> {
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = build(&vs.root());
    let shapes = vs.variables().into_iter().map(|(k, t)| (k, t.size()));
    shapes.collect()
}

/// The first key that one side lacks or that differs in shape, or `None` when they agree.
fn difference(
    model: &BTreeMap<String, Vec<i64>>,
    checkpoint: &BTreeMap<String, Vec<i64>>,
) -> Option<String> {
    for (key, shape) in model {
        match checkpoint.get(key) {
            None => return Some(format!("no '{key}'")),
            Some(other) if other != shape => {
                return Some(format!("'{key}' is {other:?}, not {shape:?}"))
            }
            Some(_) => {}
        }
    }
    (checkpoint.keys())
        .find(|k| !model.contains_key(*k) && !k.ends_with("num_batches_tracked"))
        .map(|k| format!("an unexpected '{k}'"))
}
