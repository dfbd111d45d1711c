//! Global unstructured pruning across several tensors.

mod common;

use common::{tensor2, values};
use std::sync::Arc;
use tch::{nn, Device};
use tchprune::method::{L1Unstructured, LnStructured};
use tchprune::{layers, prune, Module, Norm, PruneError};

fn two_modules() -> Module {
    Module::new("Pair")
        .with_child(
            "m",
            common::module_with_weight(&tensor2(&[
                &[1.0, 2.0, 3.0, 4.0],
                &[-4.0, -3.0, -2.0, -1.0],
            ])),
        )
        .with_child(
            "n",
            common::module_with_weight(&tensor2(&[&[0.0, 0.1, -2.0]])),
        )
}

fn weights(root: &Module) -> (Vec<f64>, Vec<f64>) {
    (
        values(&root.child("m").unwrap().get("weight")),
        values(&root.child("n").unwrap().get("weight")),
    )
}

#[test]
fn global_l1_prunes_the_smallest_entries_overall() {
    let mut root = two_modules();
    prune::global_unstructured(
        &mut root,
        &["m.weight", "n.weight"],
        Arc::new(L1Unstructured::new(4).unwrap()),
        &[],
    )
    .unwrap();
    let (m, n) = weights(&root);
    assert_eq!(m, [0.0, 2.0, 3.0, 4.0, -4.0, -3.0, -2.0, 0.0]);
    assert_eq!(n, [0.0, 0.0, -2.0]);
    assert_eq!(
        root.child("m")
            .unwrap()
            .pruning_hook("weight")
            .unwrap()
            .method_names(),
        ["custom_from_mask"]
    );
}

#[test]
fn global_l1_with_importance_scores() {
    let mut root = two_modules();
    let m_scores = tensor2(&[&[4.0, 2.0, 1.0, 3.0], &[-3.0, -1.0, -2.0, -4.0]]);
    let n_scores = tensor2(&[&[0.5, 1.0, 0.5]]);
    let method = Arc::new(L1Unstructured::new(4).unwrap());
    prune::global_unstructured(
        &mut root,
        &["m.weight", "n.weight"],
        method,
        &[("m.weight", &m_scores), ("n.weight", &n_scores)],
    )
    .unwrap();
    // Scores 0.5, 0.5, then three tied 1s for two places: PyTorch's topk (and so tchprune)
    // takes n[1] and m[5] (`torch.topk(scores, 4, largest=False).indices == [10, 8, 9, 5]`).
    let (m, n) = weights(&root);
    assert_eq!(m, [1.0, 2.0, 3.0, 4.0, -4.0, 0.0, -2.0, -1.0]);
    assert_eq!(n, [0.0, 0.0, 0.0]);
}

#[test]
fn global_pruning_of_lenet_hits_the_exact_overall_share() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let paths = layers::LENET_WEIGHTS;
    prune::global_unstructured(
        &mut model,
        &paths,
        Arc::new(L1Unstructured::new(0.2).unwrap()),
        &[],
    )
    .unwrap();
    let rows = tchprune::sparsity::sparsity(&model, &paths).unwrap();
    let global = rows.last().unwrap();
    assert_eq!(global.total, 59_838);
    assert_eq!(global.zeros, (0.2f64 * 59_838.0).round_ties_even() as i64);
    let shares: Vec<f64> = rows[..5].iter().map(|r| r.percent()).collect();
    assert!(
        shares.iter().any(|&s| (s - 20.0).abs() > 1.0),
        "layers differ: {shares:?}"
    );
}

#[test]
fn global_pruning_refuses_structured_methods_duplicates_and_no_tensors() {
    let mut root = two_modules();
    let ln = Arc::new(LnStructured::new(1, Norm::P(2.0), 0).unwrap());
    let err =
        prune::global_unstructured(&mut root, &["m.weight", "n.weight"], ln, &[]).unwrap_err();
    assert!(matches!(err, PruneError::WrongPruningType { .. }), "{err}");
    let l1 = Arc::new(L1Unstructured::new(1).unwrap());
    let err =
        prune::global_unstructured(&mut root, &["m.weight", "m.weight"], l1, &[]).unwrap_err();
    assert!(matches!(err, PruneError::DuplicateParameter(_)), "{err}");
    let l1 = Arc::new(L1Unstructured::new(1).unwrap());
    let err = prune::global_unstructured(&mut root, &[], l1, &[]).unwrap_err();
    assert!(err.to_string().contains("no tensors to prune"), "{err}");
    assert!(!root.is_pruned());
}

#[test]
fn a_second_global_round_only_sees_what_remains() {
    let mut root = two_modules();
    let half = || Arc::new(L1Unstructured::new(0.5).unwrap());
    prune::global_unstructured(&mut root, &["m.weight", "n.weight"], half(), &[]).unwrap();
    prune::global_unstructured(&mut root, &["m.weight", "n.weight"], half(), &[]).unwrap();
    let kept = common::mask_values(&root, "m.weight").iter().sum::<f64>()
        + common::mask_values(&root, "n.weight").iter().sum::<f64>();
    // 11 entries: 0.5 of 11 rounds to 6 (5 kept), then 0.5 of 5 rounds to 2 (3 kept)
    assert_eq!(kept, 3.0);
    assert_eq!(
        root.child("n")
            .unwrap()
            .pruning_hook("weight")
            .unwrap()
            .method_names()
            .len(),
        2
    );
}
