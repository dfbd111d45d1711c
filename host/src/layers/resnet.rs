//! ResNet-18 and ResNet-34 (basic blocks) with every width a parameter: the models that
//! [`shrink`](crate::shrink) makes smaller, under torchvision's (and tch's) names.

use std::collections::BTreeMap;
use tch::nn::{self, ModuleT};

/// The blocks of each stage of ResNet-18.
pub const RESNET18_BLOCKS: [i64; 4] = [2, 2, 2, 2];

/// The blocks of each stage of ResNet-34.
pub const RESNET34_BLOCKS: [i64; 4] = [3, 4, 6, 3];

fn conv(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, kernel, config)
}

/// A ResNet of basic blocks (`blocks` per stage) for `num_classes`, with the widths `widths`
/// gives by module path (what [`Shrunk::widths`](crate::shrink::Shrunk::widths) holds): `conv1`
/// for the stem, `layerS.B.conv1` for a block's inner width, `layerS.B.conv2` for its output
/// (one per stage: the blocks of a stage add into one sum). A width not given is torchvision's
/// (64, 128, 256, 512), so an empty map builds tch's `resnet18`/`resnet34`, variable for
/// variable and output for output.
pub fn resnet_with_widths(
    p: &nn::Path,
    blocks: [i64; 4],
    widths: &BTreeMap<String, i64>,
    num_classes: i64,
) -> nn::FuncT<'static> {
    let width = |key: String, default: i64| widths.get(&key).copied().unwrap_or(default);
    let stem_width = width("conv1".to_owned(), 64);
    let conv1 = conv(p / "conv1", 3, stem_width, 7, 2, 3);
    let bn1 = nn::batch_norm2d(p / "bn1", stem_width, Default::default());
    let mut stages = nn::seq_t();
    let mut c_in = stem_width;
    for (stage, &count) in blocks.iter().enumerate() {
        let name = format!("layer{}", stage + 1);
        let default = 64 << stage;
        for block in 0..count {
            let path = format!("{name}.{block}");
            // The stage's output width: the last block's conv2 names it, whichever was shrunk.
            let c_out = width(format!("{name}.{}.conv2", count - 1), default);
            let mid = width(format!("{path}.conv1"), default);
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let bp = p / name.as_str() / block.to_string().as_str();
            stages = stages.add(basic_block(
                bp,
                c_in,
                mid,
                c_out,
                stride,
                stage > 0 && block == 0,
            ));
            c_in = c_out;
        }
    }
    let fc = nn::linear(p / "fc", c_in, num_classes, Default::default());
    nn::func_t(move |xs, train| {
        xs.apply(&conv1)
            .apply_t(&bn1, train)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
            .apply_t(&stages, train)
            .adaptive_avg_pool2d([1, 1])
            .flat_view()
            .apply(&fc)
    })
}

fn basic_block(
    p: nn::Path,
    c_in: i64,
    mid: i64,
    c_out: i64,
    stride: i64,
    downsample: bool,
) -> impl ModuleT {
    let conv1 = conv(&p / "conv1", c_in, mid, 3, stride, 1);
    let bn1 = nn::batch_norm2d(&p / "bn1", mid, Default::default());
    let conv2 = conv(&p / "conv2", mid, c_out, 3, 1, 1);
    let bn2 = nn::batch_norm2d(&p / "bn2", c_out, Default::default());
    let shortcut = downsample.then(|| {
        nn::seq_t()
            .add(conv(&p / "downsample" / "0", c_in, c_out, 1, stride, 0))
            .add(nn::batch_norm2d(
                &p / "downsample" / "1",
                c_out,
                Default::default(),
            ))
    });
    nn::func_t(move |xs, train| {
        let ys = xs
            .apply(&conv1)
            .apply_t(&bn1, train)
            .relu()
            .apply(&conv2)
            .apply_t(&bn2, train);
        let identity = match &shortcut {
            Some(shortcut) => xs.apply_t(shortcut, train),
            None => xs.shallow_clone(),
        };
        (identity + ys).relu()
    })
}
