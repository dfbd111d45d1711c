//! Channel removal on the seed's LeNet: traced groups, group pruning on both front ends, the
//! shrunk model's widths and outputs.

use std::collections::BTreeMap;
use tch::{nn, Device, Kind, Tensor};
use tchprune::checkpoint::{self, MaskDtype};
use tchprune::shrink::{self, DependencyGraph, Group, Reader};
use tchprune::{layers, prune, LnStructured, Norm, PruneError, VarStorePruner};

fn lenet_graph() -> DependencyGraph {
    shrink::trace(layers::lenet, &[1, 1, 28, 28]).unwrap()
}

fn group(writer: &str, reader: Option<(&str, i64)>, fixed: Option<&str>) -> Group {
    let prefix = writer.strip_suffix(".weight").unwrap();
    Group {
        writers: vec![writer.to_owned()],
        channelwise: vec![format!("{prefix}.bias")],
        readers: reader.map(|(k, f)| Reader::new(k, f)).into_iter().collect(),
        fixed: fixed.map(str::to_owned),
    }
}

fn images() -> Tensor {
    Tensor::randn([16, 1, 28, 28], (Kind::Float, Device::Cpu))
}

fn max_difference(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn the_trace_finds_lenets_chain_and_the_flatten_factor() {
    let graph = lenet_graph();
    assert_eq!(
        graph.groups,
        vec![
            group("conv1.weight", Some(("conv2.weight", 1)), None),
            group("conv2.weight", Some(("fc1.weight", 25)), None),
            group("fc1.weight", Some(("fc2.weight", 1)), None),
            group("fc2.weight", Some(("fc3.weight", 1)), None),
            group(
                "fc3.weight",
                None,
                Some("its channels are the model's output")
            ),
        ]
    );
}

#[test]
fn group_pruning_then_shrinking_keeps_the_outputs() {
    tch::manual_seed(0);
    let graph = lenet_graph();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let kept = shrink::prune_groups(
        &mut model,
        &graph,
        &LnStructured::new(0.5, Norm::P(2.0), 0).unwrap(),
    )
    .unwrap();
    assert_eq!(kept, [3, 8, 60, 42]);
    // Biases are pruned with their rows, so the removed channels are dead.
    let bias_mask = model.child("conv1").unwrap().buffer("bias_mask").unwrap();
    assert_eq!(bias_mask.sum(Kind::Float).double_value(&[]), 3.0);

    let state = checkpoint::state_dict_with(&model, MaskDtype::Parameter);
    let shrunk = shrink::shrink(&state, &graph).unwrap();
    let expected: BTreeMap<String, i64> = [("conv1", 3), ("conv2", 8), ("fc1", 60), ("fc2", 42)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    assert_eq!(shrunk.widths, expected);
    assert!(shrunk.live_removed.is_empty(), "{:?}", shrunk.live_removed);
    let shapes: BTreeMap<&str, Vec<i64>> = shrunk
        .tensors
        .iter()
        .map(|(k, t)| (k.as_str(), t.size()))
        .collect();
    assert_eq!(shapes["conv1.weight_orig"], [3, 1, 3, 3]);
    assert_eq!(shapes["conv1.weight_mask"], [3, 1, 3, 3]);
    assert_eq!(shapes["conv2.weight_orig"], [8, 3, 3, 3]);
    assert_eq!(shapes["fc1.weight_orig"], [60, 200]);
    assert_eq!(shapes["fc2.bias_orig"], [42]);
    assert_eq!(shapes["fc3.weight"], [10, 42]);
    assert_eq!(shapes["fc3.bias"], [10]);

    // The kept channels are the ones the masks keep, in order.
    let conv1_rows = model
        .child("conv1")
        .unwrap()
        .buffer("weight_mask")
        .unwrap()
        .flatten(1, -1)
        .any_dim(1, false);
    let kept_rows: Vec<i64> = Vec::try_from(conv1_rows.nonzero().view(-1)).unwrap();
    assert_eq!(shrunk.groups[0].kept, kept_rows);
    assert_eq!(shrunk.groups[0].removed(), 3);

    let small_vs = nn::VarStore::new(Device::Cpu);
    let mut small = layers::lenet_with_widths(&small_vs.root(), &shrunk.widths);
    checkpoint::load_state_dict(&mut small, &shrunk.tensors, true).unwrap();
    let xs = images();
    let (masked, smaller) = (model.forward_t(&xs, false), small.forward_t(&xs, false));
    assert!(
        max_difference(&masked, &smaller) < 1e-5,
        "{}",
        max_difference(&masked, &smaller)
    );
    let parameters = |vs: &nn::VarStore| {
        vs.trainable_variables()
            .iter()
            .map(Tensor::numel)
            .sum::<usize>()
    };
    assert_eq!(parameters(&vs), 60_074);
    assert_eq!(parameters(&small_vs), 30 + 224 + 12_060 + 2_562 + 430);
}

#[test]
fn both_front_ends_prune_the_same_channels() {
    tch::manual_seed(1);
    let graph = lenet_graph();
    let method = LnStructured::new(0.25, Norm::P(1.0), 0).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let mut copy_vs = nn::VarStore::new(Device::Cpu);
    let _copy = layers::lenet(&copy_vs.root());
    copy_vs.copy(&vs).unwrap();
    let mut pruner = VarStorePruner::new(&copy_vs);
    shrink::prune_groups(&mut model, &graph, &method).unwrap();
    shrink::prune_groups(&mut pruner, &graph, &method).unwrap();
    let from_module = shrink::shrink(
        &checkpoint::state_dict_with(&model, MaskDtype::Parameter),
        &graph,
    )
    .unwrap();
    let from_varstore = shrink::shrink(&pruner.plain_state_dict(), &graph).unwrap();
    assert_eq!(from_module.groups, from_varstore.groups);
    assert_eq!(from_module.widths, from_varstore.widths);
}

#[test]
fn pruning_weights_alone_leaves_live_biases_which_shrink_reports() {
    tch::manual_seed(2);
    let graph = lenet_graph();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    prune::ln_structured(&mut model, "fc1.weight", 10, Norm::P(2.0), 0, None).unwrap();
    let state = checkpoint::state_dict_with(&model, MaskDtype::Parameter);
    let shrunk = shrink::shrink(&state, &graph).unwrap();
    assert_eq!(shrunk.widths["fc1"], 110);
    assert_eq!(shrunk.widths["conv1"], 6);
    assert_eq!(shrunk.live_removed.len(), 10, "{:?}", shrunk.live_removed);
    assert!(shrunk
        .live_removed
        .iter()
        .all(|k| k.starts_with("fc1.bias[")));
}

#[test]
fn a_group_keeps_one_channel_when_all_are_pruned() {
    let graph = lenet_graph();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    prune::ln_structured(&mut model, "conv1.weight", 1.0, Norm::P(2.0), 0, None).unwrap();
    let shrunk = shrink::shrink(
        &checkpoint::state_dict_with(&model, MaskDtype::Parameter),
        &graph,
    )
    .unwrap();
    assert_eq!(shrunk.widths["conv1"], 1);
}

#[test]
fn declared_groups_are_read_and_checked() {
    let graph = DependencyGraph::from_json(
        r#"{"groups": [{"writers": ["conv2.weight"], "channelwise": ["conv2.bias"],
                        "readers": [{"key": "fc1.weight", "factor": 25}]}]}"#,
    )
    .unwrap();
    assert_eq!(graph.groups[0], lenet_graph().groups[1]);
    assert_eq!(DependencyGraph::from_json(&graph.to_json()).unwrap(), graph);

    let vs = nn::VarStore::new(Device::Cpu);
    let model = layers::lenet(&vs.root());
    let state = checkpoint::state_dict_with(&model, MaskDtype::Parameter);
    let refused =
        |json: &str| match shrink::shrink(&state, &DependencyGraph::from_json(json).unwrap()) {
            Err(PruneError::InvalidGroups(message)) => message,
            other => panic!("{other:?}"),
        };
    let message = refused(
        r#"{"groups": [{"writers": ["conv2.weight"], "readers": [{"key": "fc1.weight"}]}]}"#,
    );
    assert!(
        message.contains("'fc1.weight'") && message.contains("factor 1"),
        "{message}"
    );
    let message = refused(r#"{"groups": [{"writers": ["conv9.weight"]}]}"#);
    assert!(message.contains("no tensor 'conv9.weight'"), "{message}");
    let message =
        refused(r#"{"groups": [{"writers": ["conv1.weight"], "channelwise": ["conv2.bias"]}]}"#);
    assert!(
        message.contains("'conv2.bias'") && message.contains("[16]"),
        "{message}"
    );
    let message =
        refused(r#"{"groups": [{"writers": ["conv1.weight"]}, {"writers": ["conv1.weight"]}]}"#);
    assert!(
        message.contains("group 2") && message.contains("also in group 1"),
        "{message}"
    );
    assert!(matches!(
        DependencyGraph::from_json(r#"{"groups": [{"writer": ["conv1.weight"]}]}"#),
        Err(PruneError::InvalidGroups(m)) if m.contains("writer")
    ));
}

#[test]
fn a_failed_group_pruning_changes_nothing() {
    let mut graph = lenet_graph();
    graph.groups[1].channelwise.push("conv2.nothing".to_owned());
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let err = shrink::prune_groups(
        &mut model,
        &graph,
        &LnStructured::new(0.5, Norm::P(2.0), 0).unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("conv2.nothing"), "{err}");
    assert!(!prune::is_pruned(&model), "group 1 was not committed");

    let unstructured = tchprune::method::L1Unstructured::new(0.5).unwrap();
    let err = shrink::prune_groups(&mut model, &lenet_graph(), &unstructured).unwrap_err();
    assert!(
        err.to_string().contains("structured method on dim 0"),
        "{err}"
    );
    let other_dim = LnStructured::new(0.5, Norm::P(2.0), 1).unwrap();
    assert!(shrink::prune_groups(&mut model, &lenet_graph(), &other_dim).is_err());
    assert!(!prune::is_pruned(&model));
}

#[test]
fn pruning_groups_again_prunes_among_the_channels_left() {
    let graph = lenet_graph();
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let method = LnStructured::new(0.5, Norm::P(2.0), 0).unwrap();
    shrink::prune_groups(&mut model, &graph, &method).unwrap();
    let kept = shrink::prune_groups(&mut model, &graph, &method).unwrap();
    assert_eq!(kept, [1, 4, 30, 21]);
}
