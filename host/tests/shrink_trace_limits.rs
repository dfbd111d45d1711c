//! What the trace cannot follow it leaves fixed, with the reason: channels concatenated,
//! mixed by an operation before a layer reads them, read by a grouped convolution; and the
//! trace does not depend on the caller's seed.

use tch::nn::{self, ModuleT};
use tch::Tensor;
use tchprune::shrink::{self, DependencyGraph};

fn conv(p: &nn::Path, name: &str, c_in: i64, c_out: i64, groups: i64) -> nn::Conv2D {
    let config = nn::ConvConfig {
        padding: 1,
        groups,
        ..Default::default()
    };
    nn::conv2d(p / name, c_in, c_out, 3, config)
}

fn group_of<'a>(graph: &'a DependencyGraph, writer: &str) -> &'a shrink::Group {
    graph
        .groups
        .iter()
        .find(|g| g.writers.iter().any(|w| w == writer))
        .unwrap()
}

fn fixed_reason(graph: &DependencyGraph, writer: &str) -> String {
    group_of(graph, writer).fixed.clone().unwrap_or_default()
}

/// `a` (3->4) and `b` (3->5) concatenated, then `c` (9->2).
fn concatenation(p: &nn::Path) -> impl ModuleT {
    let (a, b, c) = (
        conv(p, "a", 3, 4, 1),
        conv(p, "b", 3, 5, 1),
        conv(p, "c", 9, 2, 1),
    );
    nn::func_t(move |xs, _| {
        Tensor::cat(&[xs.apply(&a), xs.apply(&b)], 1)
            .relu()
            .apply(&c)
    })
}

/// `a` (3->4), a softmax over the channels, then `b` (4->2).
fn channel_softmax(p: &nn::Path) -> impl ModuleT {
    let (a, b) = (conv(p, "a", 3, 4, 1), conv(p, "b", 4, 2, 1));
    nn::func_t(move |xs, _| xs.apply(&a).softmax(1, tch::Kind::Float).apply(&b))
}

/// `a` (3->4), a depthwise `d` (4 groups), then `c` (4->2).
fn depthwise(p: &nn::Path) -> impl ModuleT {
    let (a, d, c) = (
        conv(p, "a", 3, 4, 1),
        conv(p, "d", 4, 4, 4),
        conv(p, "c", 4, 2, 1),
    );
    nn::func_t(move |xs, _| xs.apply(&a).relu().apply(&d).relu().apply(&c))
}

#[test]
fn concatenated_channels_are_left_fixed() {
    let graph = shrink::trace(concatenation, &[1, 3, 8, 8]).unwrap();
    for writer in ["a.weight", "b.weight"] {
        let reason = fixed_reason(&graph, writer);
        assert!(
            reason.contains("'c.weight' reads its channels"),
            "{writer}: {reason}"
        );
    }
}

#[test]
fn channels_mixed_before_a_layer_reads_them_are_left_fixed() {
    let graph = shrink::trace(channel_softmax, &[1, 3, 8, 8]).unwrap();
    let reason = fixed_reason(&graph, "a.weight");
    assert!(
        reason.contains("'b.weight' reads channels mixed"),
        "{reason}"
    );
}

#[test]
fn grouped_convolutions_are_left_fixed() {
    let graph = shrink::trace(depthwise, &[1, 3, 8, 8]).unwrap();
    // `d` reads each channel alone: to the probe, its input looks mixed.
    for writer in ["a.weight", "d.weight"] {
        let reason = fixed_reason(&graph, writer);
        assert!(reason.contains("'d.weight'"), "{writer}: {reason}");
    }
    // Nothing of a fixed group is removed.
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let _model = depthwise(&vs.root());
    let state: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    let shrunk = shrink::shrink(&state, &graph).unwrap();
    assert!(shrunk.groups.iter().all(|g| g.removed() == 0));
}

#[test]
fn the_groups_do_not_depend_on_the_seed() {
    tch::manual_seed(1);
    let first = shrink::trace(|p| tch::vision::resnet::resnet18(p, 10), &[1, 3, 64, 64]).unwrap();
    tch::manual_seed(2);
    let second = shrink::trace(|p| tch::vision::resnet::resnet18(p, 10), &[1, 3, 64, 64]).unwrap();
    assert_eq!(first, second);
}

#[test]
fn a_model_without_layers_is_refused() {
    let err = shrink::trace(|_| nn::func_t(|xs, _| xs.relu()), &[1, 3]).unwrap_err();
    assert!(
        err.to_string().contains("no weights of 2+ dimensions"),
        "{err}"
    );
}

#[test]
fn an_input_the_model_does_not_take_is_an_error() {
    let err = shrink::trace(concatenation, &[1, 5, 8, 8]).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("forward pass failed on an input of shape [8, 5, 8, 8]"),
        "{message}"
    );
}
