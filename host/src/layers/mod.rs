//! Prunable versions of tch's layers, the layers without parameters that models need between
//! them, and the tutorial's LeNet.
//!
//! Each layer with parameters creates its variables through tch's own constructors (same
//! names in the `VarStore`, same initialization as `tch::nn` for the same config), then exposes
//! them as the parameters and buffers of a [`Module`] under PyTorch's names, so its
//! `state_dict` is PyTorch's. Forward functions read tensors with [`Module::get`] and honour
//! the train flag (dropout, batch norm's statistics).

mod builtin;
mod resnet;

pub(crate) use builtin::builtin_classes;
pub use builtin::{
    builtin_model, convolution_sites, default_image, ConvolutionSite, BUILTIN_MODELS,
};
pub use resnet::{resnet_with_widths, RESNET18_BLOCKS, RESNET34_BLOCKS};

use crate::module::Module;
use std::collections::BTreeMap;
use tch::nn::{self, ConvConfigND};
use tch::{Kind, Tensor};

/// PyTorch's default initialization of Linear and Conv layers, weight and bias alike:
/// uniform in `±1/sqrt(fan_in)` (what `kaiming_uniform_(a=sqrt(5))` amounts to).
pub fn torch_default_init(fan_in: i64) -> nn::Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    nn::Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A convolution config with PyTorch's default initialization for `fan_in` inputs per output
/// (`in_channels / groups * kernel volume`).
pub fn torch_conv_config(fan_in: i64) -> nn::ConvConfig {
    nn::ConvConfig {
        ws_init: torch_default_init(fan_in),
        bs_init: torch_default_init(fan_in),
        ..Default::default()
    }
}

/// A linear config with PyTorch's default initialization for `in_dim` inputs (tch's default
/// draws the weight differently).
pub fn torch_linear_config(in_dim: i64) -> nn::LinearConfig {
    nn::LinearConfig {
        ws_init: torch_default_init(in_dim),
        bs_init: Some(torch_default_init(in_dim)),
        bias: true,
    }
}

/// A batch-norm config with PyTorch's initialization (weight 1, bias 0; tch's default draws
/// the weight uniformly in [0, 1)).
pub fn torch_batch_norm_config() -> nn::BatchNormConfig {
    nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        bs_init: nn::Init::Const(0.0),
        ..Default::default()
    }
}

/// A fully connected layer (`nn.Linear`): `weight` is `[out, in]`, `bias` (unless
/// `config.bias` is false) is `[out]`. [`torch_linear_config`] initializes it as PyTorch does.
pub fn linear(path: &nn::Path, in_dim: i64, out_dim: i64, config: nn::LinearConfig) -> Module {
    let layer = nn::linear(path, in_dim, out_dim, config);
    let module = Module::new("Linear").with_parameter("weight", layer.ws);
    let module = match layer.bs {
        Some(bias) => module.with_parameter("bias", bias),
        None => module,
    };
    module.with_forward(|m, xs, _| xs.linear(&m.get("weight"), m.get_optional("bias").as_ref()))
}

macro_rules! conv_layer {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $tch_ctor:ident, $op:ident, $nd:literal) => {
        $(#[$doc])*
        pub fn $name(
            path: &nn::Path,
            in_channels: i64,
            out_channels: i64,
            kernel_size: i64,
            config: nn::ConvConfig,
        ) -> Module {
            let layer = nn::$tch_ctor(path, in_channels, out_channels, kernel_size, config);
            conv_module($kind, layer.ws, layer.bs, config, move |xs, w, b, c| {
                let [stride, padding, dilation] =
                    [c.stride, c.padding, c.dilation].map(|v| [v; $nd]);
                xs.$op(w, b, stride, padding, dilation, c.groups)
            })
        }
    };
}

conv_layer!(
    /// A 1-d convolution (`nn.Conv1d`): `weight` is `[out, in / groups, k]`.
    conv1d, "Conv1d", conv1d, conv1d, 1
);
conv_layer!(
    /// A 2-d convolution (`nn.Conv2d`): `weight` is `[out, in / groups, k, k]`.
    conv2d, "Conv2d", conv2d, conv2d, 2
);
conv_layer!(
    /// A 3-d convolution (`nn.Conv3d`): `weight` is `[out, in / groups, k, k, k]`.
    conv3d, "Conv3d", conv3d, conv3d, 3
);

type ConvOp = fn(&Tensor, &Tensor, Option<&Tensor>, &nn::ConvConfig) -> Tensor;

fn conv_module(
    kind: &str,
    weight: Tensor,
    bias: Option<Tensor>,
    config: ConvConfigND<i64>,
    op: ConvOp,
) -> Module {
    let module = Module::new(kind).with_parameter("weight", weight);
    let module = match bias {
        Some(bias) => module.with_parameter("bias", bias),
        None => module,
    };
    module
        .with_conv_config(config)
        .with_forward(move |m, xs, _| {
            op(
                xs,
                &m.get("weight"),
                m.get_optional("bias").as_ref(),
                &config,
            )
        })
}

/// The weights of [`lenet`], in order: what the tutorial prunes by layer type and globally.
pub const LENET_WEIGHTS: [&str; 5] = [
    "conv1.weight",
    "conv2.weight",
    "fc1.weight",
    "fc2.weight",
    "fc3.weight",
];

/// The tutorial's LeNet (LeCun et al., 1998) for 1x28x28 images: conv1 (1->6, 3x3), conv2
/// (6->16, 3x3), fc1 (400->120), fc2 (120->84), fc3 (84->10), with max-pool 2 after each
/// convolution and ReLU everywhere but the last layer.
pub fn lenet(path: &nn::Path) -> Module {
    lenet_with_widths(path, &BTreeMap::new())
}

/// [`lenet`] with the widths `widths` gives by layer (`conv1`, `conv2`, `fc1`, `fc2`: output
/// channels or features; the others as in [`lenet`]): the model a
/// [`shrink`](crate::shrink::shrink)ed LeNet loads into.
pub fn lenet_with_widths(path: &nn::Path, widths: &BTreeMap<String, i64>) -> Module {
    let width = |name: &str, default: i64| widths.get(name).copied().unwrap_or(default);
    let (c1, c2, f1, f2) = (
        width("conv1", 6),
        width("conv2", 16),
        width("fc1", 120),
        width("fc2", 84),
    );
    Module::new("LeNet")
        .with_child(
            "conv1",
            conv2d(&(path / "conv1"), 1, c1, 3, torch_conv_config(9)),
        )
        .with_child(
            "conv2",
            conv2d(&(path / "conv2"), c1, c2, 3, torch_conv_config(c1 * 9)),
        )
        .with_child(
            "fc1",
            linear(
                &(path / "fc1"),
                c2 * 5 * 5,
                f1,
                torch_linear_config(c2 * 25),
            ),
        )
        .with_child(
            "fc2",
            linear(&(path / "fc2"), f1, f2, torch_linear_config(f1)),
        )
        .with_child(
            "fc3",
            linear(&(path / "fc3"), f2, 10, torch_linear_config(f2)),
        )
        .with_forward(|m, xs, train| {
            let child = |name: &str| m.child(name).expect("LeNet's own layers");
            let xs = child("conv1")
                .forward_t(xs, train)
                .relu()
                .max_pool2d_default(2);
            let xs = child("conv2")
                .forward_t(&xs, train)
                .relu()
                .max_pool2d_default(2);
            let xs = xs.flatten(1, -1);
            let xs = child("fc1").forward_t(&xs, train).relu();
            let xs = child("fc2").forward_t(&xs, train).relu();
            child("fc3").forward_t(&xs, train)
        })
}

macro_rules! batch_norm_layer {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $tch_ctor:ident) => {
        $(#[$doc])*
        pub fn $name(path: &nn::Path, num_features: i64, config: nn::BatchNormConfig) -> Module {
            let layer = nn::$tch_ctor(path, num_features, config);
            batch_norm_module($kind, path, layer, config)
        }
    };
}

batch_norm_layer!(
    /// Batch normalization over `[N, C]` or `[N, C, L]` (`nn.BatchNorm1d`): parameters
    /// `weight` and `bias` (when `config.affine`), buffers `running_mean`, `running_var` and
    /// `num_batches_tracked`, updated in train mode. [`torch_batch_norm_config`] initializes it
    /// as PyTorch does.
    batch_norm1d, "BatchNorm1d", batch_norm1d
);
batch_norm_layer!(
    /// Batch normalization over `[N, C, H, W]` (`nn.BatchNorm2d`); see [`batch_norm1d`].
    batch_norm2d, "BatchNorm2d", batch_norm2d
);

fn batch_norm_module(
    kind: &str,
    path: &nn::Path,
    layer: nn::BatchNorm,
    config: nn::BatchNormConfig,
) -> Module {
    // PyTorch's counter of training batches, an int64 scalar; tch keeps none, so it joins the
    // VarStore here (not trainable) to be saved and loaded with the rest.
    let tracked = path.add(
        "num_batches_tracked",
        Tensor::zeros([], (Kind::Int64, path.device())),
        false,
    );
    let mut module = Module::new(kind);
    if let (Some(weight), Some(bias)) = (layer.ws, layer.bs) {
        module = module
            .with_parameter("weight", weight)
            .with_parameter("bias", bias);
    }
    module
        .with_buffer("running_mean", layer.running_mean)
        .with_buffer("running_var", layer.running_var)
        .with_buffer("num_batches_tracked", tracked)
        .with_forward(move |m, xs, train| {
            let buffer = |name: &str| m.buffer(name).expect("batch norm's own buffers");
            if train {
                let mut tracked = buffer("num_batches_tracked").shallow_clone();
                let _ = tch::no_grad(|| tracked.f_add_scalar_(1));
            }
            Tensor::batch_norm(
                xs,
                m.get_optional("weight").as_ref(),
                m.get_optional("bias").as_ref(),
                Some(buffer("running_mean")),
                Some(buffer("running_var")),
                train,
                config.momentum,
                config.eps,
                config.cudnn_enabled,
            )
        })
}

/// The layers of `layers` applied one after the other (`nn.Sequential`), named `"0"`, `"1"`,
/// ... as PyTorch names them: build the layer at index `i` under the path `path / i` so that
/// the `VarStore` and the state_dict agree (layers without parameters count too).
///
/// ```
/// use tch::{nn, Device, Kind, Tensor};
/// use tchprune::layers::{linear, relu, sequential, torch_linear_config};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let p = vs.root();
/// let mlp = sequential([
///     linear(&(&p / "0"), 8, 4, torch_linear_config(8)),
///     relu(),
///     linear(&(&p / "2"), 4, 2, torch_linear_config(4)),
/// ]);
/// let keys: Vec<String> = mlp.state_dict().into_iter().map(|(k, _)| k).collect();
/// assert_eq!(keys, ["0.weight", "0.bias", "2.weight", "2.bias"]);
/// assert_eq!(mlp.forward(&Tensor::ones([3, 8], (Kind::Float, Device::Cpu))).size(), [3, 2]);
/// ```
pub fn sequential(layers: impl IntoIterator<Item = Module>) -> Module {
    let mut module = Module::new("Sequential");
    for (index, layer) in layers.into_iter().enumerate() {
        module = module.with_child(&index.to_string(), layer);
    }
    module.with_forward(move |m, xs, train| {
        m.children().fold(xs.shallow_clone(), |xs, (_, layer)| {
            layer.forward_t(&xs, train)
        })
    })
}

/// A layer without parameters computing `f(xs, train)`, shown as `kind`.
pub fn function(kind: &str, f: impl Fn(&Tensor, bool) -> Tensor + Send + Sync + 'static) -> Module {
    Module::new(kind).with_forward(move |_, xs, train| f(xs, train))
}

/// `max(x, 0)` (`nn.ReLU`).
pub fn relu() -> Module {
    function("ReLU", |xs, _| xs.relu())
}

/// Zeroes entries with probability `p` in train mode, scaling the rest by `1 / (1 - p)`
/// (`nn.Dropout`); the identity in eval mode.
pub fn dropout(p: f64) -> Module {
    function("Dropout", move |xs, train| xs.dropout(p, train))
}

/// Flattens dimensions `start_dim..=end_dim` into one (`nn.Flatten`; PyTorch's defaults are
/// 1 and -1).
pub fn flatten(start_dim: i64, end_dim: i64) -> Module {
    function("Flatten", move |xs, _| xs.flatten(start_dim, end_dim))
}

/// 2-d max pooling with a square `kernel_size` window moving by `stride` (`nn.MaxPool2d`;
/// PyTorch's default stride is the kernel size), without padding.
pub fn max_pool2d(kernel_size: i64, stride: i64) -> Module {
    function("MaxPool2d", move |xs, _| {
        xs.max_pool2d([kernel_size; 2], [stride; 2], [0; 2], [1; 2], false)
    })
}

/// 2-d average pooling with a square `kernel_size` window moving by `stride` (`nn.AvgPool2d`),
/// without padding.
pub fn avg_pool2d(kernel_size: i64, stride: i64) -> Module {
    function("AvgPool2d", move |xs, _| {
        xs.avg_pool2d([kernel_size; 2], [stride; 2], [0; 2], false, true, None)
    })
}

/// 2-d average pooling to an `output_size` square (`nn.AdaptiveAvgPool2d`).
pub fn adaptive_avg_pool2d(output_size: i64) -> Module {
    function("AdaptiveAvgPool2d", move |xs, _| {
        xs.adaptive_avg_pool2d([output_size; 2])
    })
}
