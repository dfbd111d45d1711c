//! Prunable versions of tch's layers, and the tutorial's LeNet.
//!
//! Each layer creates its variables through tch's own constructors (same names, same
//! initialization as `tch::nn`), then exposes them as the parameters `weight` and `bias` of a
//! [`Module`] whose forward reads them with [`Module::get`].

use crate::module::Module;
use tch::nn::{self, ConvConfigND};
use tch::Tensor;

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

/// A fully connected layer (`nn.Linear`) initialized as PyTorch does: `weight` is `[out, in]`,
/// `bias` is `[out]`.
pub fn linear(path: &nn::Path, in_dim: i64, out_dim: i64) -> Module {
    let config = nn::LinearConfig {
        ws_init: torch_default_init(in_dim),
        bs_init: Some(torch_default_init(in_dim)),
        bias: true,
    };
    let layer = nn::linear(path, in_dim, out_dim, config);
    let module = Module::new("Linear").with_parameter("weight", layer.ws);
    let module = match layer.bs {
        Some(bias) => module.with_parameter("bias", bias),
        None => module,
    };
    module.with_forward(|m, xs, _| {
        let bias = m.parameter("bias").map(|_| m.get("bias"));
        xs.linear(&m.get("weight"), bias.as_ref())
    })
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
    module.with_forward(move |m, xs, _| {
        let bias = m.parameter("bias").map(|_| m.get("bias"));
        op(xs, &m.get("weight"), bias.as_ref(), &config)
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
    Module::new("LeNet")
        .with_child(
            "conv1",
            conv2d(&(path / "conv1"), 1, 6, 3, torch_conv_config(9)),
        )
        .with_child(
            "conv2",
            conv2d(&(path / "conv2"), 6, 16, 3, torch_conv_config(6 * 9)),
        )
        .with_child("fc1", linear(&(path / "fc1"), 16 * 5 * 5, 120))
        .with_child("fc2", linear(&(path / "fc2"), 120, 84))
        .with_child("fc3", linear(&(path / "fc3"), 84, 10))
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
