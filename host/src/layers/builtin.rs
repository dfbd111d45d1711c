//! The built-in models as a checkpoint shows them: which one a state_dict is (by its tensors'
//! names and shapes), and where its convolutions are and what they see. What commands need for
//! a checkpoint that comes without its model's code (`shrink` traces the groups of the model
//! found, `speed` times its convolutions at their input sizes).

use super::{lenet, RESNET18_BLOCKS, RESNET34_BLOCKS};
use crate::error::{PruneError, Result};
use std::collections::BTreeMap;
use tch::{nn, Device};

/// The built-in models, by the name a plan or the CLI gives: the seed's LeNet and tch's
/// (torchvision's) ResNet-18 and ResNet-34, any number of classes.
pub const BUILTIN_MODELS: [&str; 3] = ["lenet", "resnet18", "resnet34"];

/// The built-in model `name` is, checked against `shapes` (a state_dict's keys, pruned pairs
/// as their parameter, without `num_batches_tracked`); for `"auto"`, the first whose tensors
/// have those names and shapes. An error says which keys do not fit.
pub fn builtin_model(name: &str, shapes: &BTreeMap<String, Vec<i64>>) -> Result<&'static str> {
    let candidates: Vec<&'static str> = match name {
        "auto" => BUILTIN_MODELS.to_vec(),
        name => match BUILTIN_MODELS.iter().find(|&&m| m == name) {
            Some(&model) => vec![model],
            None => {
                return Err(PruneError::InvalidGroups(format!(
                    "no built-in model '{name}' (there are auto, {})",
                    BUILTIN_MODELS.join(", ")
                )))
            }
        },
    };
    let classes = builtin_classes(shapes);
    let mut mismatches = Vec::new();
    for candidate in candidates {
        // The ResNets are built with 10 classes and their classifier's shapes set after: a
        // checkpoint claiming 2^28 classes (of zero-width rows, a few bytes) must not make a
        // model of that size.
        let model_shapes = match candidate {
            "lenet" => variable_shapes(lenet),
            "resnet18" => resnet_shapes(|p| tch::vision::resnet::resnet18(p, 10), classes),
            _ => resnet_shapes(|p| tch::vision::resnet::resnet34(p, 10), classes),
        };
        match difference(&model_shapes, shapes) {
            None => return Ok(candidate),
            Some(why) => mismatches.push(format!("not {candidate}: {why}")),
        }
    }
    Err(PruneError::InvalidGroups(format!(
        "the checkpoint is not a built-in model ({})",
        mismatches.join("; ")
    )))
}

/// The number of classes of a built-in ResNet checkpoint (`fc.weight`'s rows; 10 otherwise).
pub(crate) fn builtin_classes(shapes: &BTreeMap<String, Vec<i64>>) -> i64 {
    (shapes.get("fc.weight").and_then(|s| s.first().copied())).unwrap_or(10)
}

fn variable_shapes<M>(build: impl FnOnce(&nn::Path) -> M) -> BTreeMap<String, Vec<i64>> {
    let vs = nn::VarStore::new(Device::Cpu);
    let _model = build(&vs.root());
    let shapes = vs.variables().into_iter().map(|(k, t)| (k, t.size()));
    shapes.collect()
}

/// The variables' shapes of a ResNet built by `build` (with any number of classes), its
/// classifier's set for `classes`.
fn resnet_shapes<M>(
    build: impl FnOnce(&nn::Path) -> M,
    classes: i64,
) -> BTreeMap<String, Vec<i64>> {
    let mut shapes = variable_shapes(build);
    if let Some(weight) = shapes.get_mut("fc.weight") {
        weight[0] = classes;
    }
    shapes.insert("fc.bias".to_owned(), vec![classes]);
    shapes
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

/// A convolution of a built-in model: its weight's key, its settings, and the height and width
/// of its input for the model's input image.
#[derive(Clone, Debug)]
pub struct ConvolutionSite {
    /// The weight's key (`layer2.0.conv1.weight`).
    pub weight: String,
    /// Stride, padding, dilation, groups.
    pub config: nn::ConvConfig,
    /// `[height, width]` of the input.
    pub input_size: [i64; 2],
}

/// The image a built-in model takes by default (`[channels, height, width]`): LeNet's 1x28x28,
/// the ResNets' 3x224x224.
pub fn default_image(model: &str) -> [i64; 3] {
    match model {
        "lenet" => [1, 28, 28],
        _ => [3, 224, 224],
    }
}

/// The convolutions of the built-in model `model` (a name of [`BUILTIN_MODELS`]) for an input
/// image of `[height, width]`, in the model's order. Widths play no part (a shrunk model's
/// convolutions sit where the full model's do).
pub fn convolution_sites(model: &str, [height, width]: [i64; 2]) -> Result<Vec<ConvolutionSite>> {
    let out =
        |x: i64, kernel: i64, stride: i64, padding: i64| (x + 2 * padding - kernel) / stride + 1;
    let site = |weight: String, stride: i64, padding: i64, input_size: [i64; 2]| ConvolutionSite {
        weight,
        config: nn::ConvConfig {
            stride,
            padding,
            ..Default::default()
        },
        input_size,
    };
    let blocks = match model {
        "lenet" => {
            let after = |x: i64| out(x, 3, 1, 0) / 2;
            return Ok(vec![
                site("conv1.weight".into(), 1, 0, [height, width]),
                site("conv2.weight".into(), 1, 0, [after(height), after(width)]),
            ]);
        }
        "resnet18" => RESNET18_BLOCKS,
        "resnet34" => RESNET34_BLOCKS,
        other => {
            return Err(PruneError::InvalidGroups(format!(
                "no built-in model '{other}' (there are {})",
                BUILTIN_MODELS.join(", ")
            )))
        }
    };
    let mut sites = vec![site("conv1.weight".into(), 2, 3, [height, width])];
    let stem = |x: i64| out(out(x, 7, 2, 3), 3, 2, 1);
    let mut size = [stem(height), stem(width)];
    for (stage, &count) in blocks.iter().enumerate() {
        for block in 0..count {
            let prefix = format!("layer{}.{block}", stage + 1);
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let inner = size.map(|x| out(x, 3, stride, 1));
            sites.push(site(format!("{prefix}.conv1.weight"), stride, 1, size));
            sites.push(site(format!("{prefix}.conv2.weight"), 1, 1, inner));
            if stride == 2 {
                sites.push(site(format!("{prefix}.downsample.0.weight"), 2, 0, size));
            }
            size = inner;
        }
    }
    Ok(sites)
}
