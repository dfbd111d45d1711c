//! Channel removal on tch's ResNet-18 (torchvision's names): the residual groups the trace
//! finds, and a shrunk model with the masked model's outputs.

mod common;

use std::collections::BTreeMap;
use tch::nn::ModuleT;
use tch::{nn, Device, Kind, Tensor};
use tchprune::layers::{resnet_with_widths, RESNET18_BLOCKS};
use tchprune::shrink;

fn writers(group: &shrink::Group) -> Vec<&str> {
    group.writers.iter().map(String::as_str).collect()
}

#[test]
fn the_trace_couples_the_layers_added_together() {
    let graph = shrink::trace(|p| tch::vision::resnet::resnet18(p, 10), &[1, 3, 64, 64]).unwrap();
    let groups: Vec<Vec<&str>> = graph.groups.iter().map(writers).collect();
    assert_eq!(
        groups,
        vec![
            vec![
                "conv1.weight",
                "layer1.0.conv2.weight",
                "layer1.1.conv2.weight"
            ],
            vec!["fc.weight"],
            vec!["layer1.0.conv1.weight"],
            vec!["layer1.1.conv1.weight"],
            vec!["layer2.0.conv1.weight"],
            vec![
                "layer2.0.conv2.weight",
                "layer2.0.downsample.0.weight",
                "layer2.1.conv2.weight"
            ],
            vec!["layer2.1.conv1.weight"],
            vec!["layer3.0.conv1.weight"],
            vec![
                "layer3.0.conv2.weight",
                "layer3.0.downsample.0.weight",
                "layer3.1.conv2.weight"
            ],
            vec!["layer3.1.conv1.weight"],
            vec!["layer4.0.conv1.weight"],
            vec![
                "layer4.0.conv2.weight",
                "layer4.0.downsample.0.weight",
                "layer4.1.conv2.weight"
            ],
            vec!["layer4.1.conv1.weight"],
        ]
    );
    let fixed: Vec<&str> = graph
        .groups
        .iter()
        .filter(|g| g.fixed.is_some())
        .flat_map(writers)
        .collect();
    assert_eq!(fixed, ["fc.weight"]);
    let stem = &graph.groups[0];
    let readers: Vec<(&str, i64)> = stem
        .readers
        .iter()
        .map(|r| (r.key.as_str(), r.factor))
        .collect();
    assert_eq!(
        readers,
        [
            ("layer1.0.conv1.weight", 1),
            ("layer1.1.conv1.weight", 1),
            ("layer2.0.conv1.weight", 1),
            ("layer2.0.downsample.0.weight", 1)
        ]
    );
    assert_eq!(
        stem.channelwise.len(),
        12,
        "three BatchNorms, four tensors each"
    );
    assert!(stem
        .channelwise
        .contains(&"layer1.1.bn2.running_var".to_owned()));
    let last = &graph.groups[11];
    let readers: Vec<&str> = last.readers.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(readers, ["fc.weight", "layer4.1.conv1.weight"]);
}

#[test]
fn default_widths_build_tchs_resnet18() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let theirs = tch::vision::resnet::resnet18(&vs.root(), 10);
    let mut ours_vs = nn::VarStore::new(Device::Cpu);
    let ours = resnet_with_widths(&ours_vs.root(), RESNET18_BLOCKS, &BTreeMap::new(), 10);
    let shapes = |vs: &nn::VarStore| -> BTreeMap<String, Vec<i64>> {
        vs.variables()
            .into_iter()
            .map(|(k, t)| (k, t.size()))
            .collect()
    };
    assert_eq!(shapes(&vs), shapes(&ours_vs));
    ours_vs.copy(&vs).unwrap();
    let xs = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
    assert!(theirs
        .forward_t(&xs, false)
        .equal(&ours.forward_t(&xs, false)));
}

#[test]
fn half_the_channels_removed_gives_the_masked_models_outputs() {
    let masked = common::masked_resnet18(1);
    let shrunk = shrink::shrink(&masked.pruner.plain_state_dict(), &masked.graph).unwrap();
    assert!(shrunk.live_removed.is_empty(), "{:?}", shrunk.live_removed);
    assert_eq!(shrunk.groups.len(), 12);
    for group in &shrunk.groups {
        assert_eq!(
            group.kept.len() as i64 * 2,
            group.channels,
            "{:?}",
            group.writers
        );
    }
    assert_eq!(shrunk.widths["conv1"], 32);
    assert_eq!(shrunk.widths["layer4.1.bn2"], 256);
    assert_eq!(shrunk.widths["layer2.0.downsample.0"], 64);

    let mut small_vs = nn::VarStore::new(Device::Cpu);
    let small = resnet_with_widths(&small_vs.root(), RESNET18_BLOCKS, &shrunk.widths, 10);
    let state: std::collections::HashMap<String, Tensor> = shrunk.tensors.into_iter().collect();
    tch::no_grad(|| {
        for (name, mut t) in small_vs.variables() {
            t.copy_(&state[&name]);
        }
    });
    let _ = &mut small_vs;
    let xs = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));
    let (a, b) = (
        masked.model.forward_t(&xs, false),
        small.forward_t(&xs, false),
    );
    let scale = a.abs().max().double_value(&[]);
    let difference = (&a - &b).abs().max().double_value(&[]);
    assert!(
        difference <= 1e-5 * scale.max(1.0),
        "{difference} (logits up to {scale})"
    );

    let count = |vs: &nn::VarStore| {
        vs.trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum::<usize>()
    };
    let (dense, smaller) = (count(&masked.vs), count(&small_vs));
    assert_eq!(dense, 11_181_642);
    assert!(smaller * 4 < dense + 50_000, "{smaller} of {dense}");
}
