//! Tensors beyond the size where ties are resolved by `topk`: the fast selection still prunes
//! PyTorch's set for distinct magnitudes, and exactly the requested count with ties, for one
//! tensor and across tensors in global pruning.

mod common;

use std::sync::Arc;
use tch::{Device, Kind, Tensor};
use tchprune::method::L1Unstructured;
use tchprune::{checkpoint::module_from_state_dict, prune, Module};

const N: i64 = 3 << 20;

/// Distinct magnitudes in random order, with random signs.
fn distinct(n: i64, kind: Kind, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let magnitudes = Tensor::randperm(n, (Kind::Int64, Device::Cpu)).to_kind(Kind::Double) + 1.0;
    let signs =
        Tensor::randint(2, [n], (Kind::Int64, Device::Cpu)).to_kind(Kind::Double) * 2.0 - 1.0;
    (magnitudes * signs).to_kind(kind)
}

/// PyTorch's mask: `topk` over the magnitudes.
fn topk_mask(t: &Tensor, k: i64) -> Tensor {
    let (_, pruned) = t
        .abs()
        .flatten(0, -1)
        .to_kind(Kind::Double)
        .topk(k, 0, false, true);
    let mask = Tensor::ones([t.numel() as i64], (Kind::Bool, Device::Cpu));
    mask.index_fill(0, &pruned, 0).view(t.size().as_slice())
}

fn mask_of(m: &Module, path: &str) -> Tensor {
    let (module, name) = tchprune::split_tensor_path(path);
    m.submodule(module)
        .unwrap()
        .buffer(&format!("{name}_mask"))
        .unwrap()
        .to_kind(Kind::Bool)
}

#[test]
fn one_large_tensor_matches_topk_for_every_float_dtype() {
    for (kind, n) in [
        (Kind::Float, N),
        (Kind::Double, N),
        (Kind::Half, 2000),
        (Kind::BFloat16, 250),
    ] {
        let t = distinct(n, kind, 1);
        let mut m = common::module_with_weight(&t);
        prune::l1_unstructured(&mut m, "weight", 0.37, None).unwrap();
        let k = (n as f64 * 0.37).round_ties_even() as i64; // Python's round()
        assert!(mask_of(&m, "weight").equal(&topk_mask(&t, k)), "{kind:?}");
    }
}

#[test]
fn ties_in_a_large_tensor_prune_exactly_the_requested_count() {
    tch::manual_seed(2);
    let t = Tensor::randint_low(-50, 50, [N], (Kind::Int64, Device::Cpu)).to_kind(Kind::Float);
    let mut m = common::module_with_weight(&t);
    prune::l1_unstructured(&mut m, "weight", 0.5, None).unwrap();
    let mask = mask_of(&m, "weight");
    assert_eq!(mask.logical_not().sum(Kind::Int64).int64_value(&[]), N / 2);
    // Every pruned magnitude is at most every kept one.
    let magnitudes = t.abs();
    let largest_pruned = magnitudes
        .masked_select(&mask.logical_not())
        .max()
        .double_value(&[]);
    let smallest_kept = magnitudes.masked_select(&mask).min().double_value(&[]);
    assert!(largest_pruned <= smallest_kept);
}

#[test]
fn global_pruning_of_large_tensors_matches_the_concatenated_topk() {
    let sizes = [N / 2, N / 3, N / 6];
    let all = distinct(sizes.iter().sum(), Kind::Float, 3);
    let parts = all.split_with_sizes(sizes, 0);
    let state: Vec<(String, Tensor)> = parts
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("layer{i}.weight"), t.copy()))
        .collect();
    let mut model = module_from_state_dict(state).unwrap();
    // First round on one tensor, so the global round sees a mask as well (mostly pruned, so
    // its live entries are gathered).
    prune::l1_unstructured(&mut model, "layer1.weight", 0.7, None).unwrap();
    let first = mask_of(&model, "layer1.weight");
    let paths = ["layer0.weight", "layer1.weight", "layer2.weight"];
    prune::global_unstructured(
        &mut model,
        &paths,
        Arc::new(L1Unstructured::new(0.6).unwrap()),
        &[],
    )
    .unwrap();

    // PyTorch: topk over the live entries of the concatenation.
    let live = Tensor::cat(
        &[
            parts[0].ones_like().to_kind(Kind::Bool),
            first,
            parts[2].ones_like().to_kind(Kind::Bool),
        ],
        0,
    );
    let live_values = all.masked_select(&live);
    let k = (live_values.numel() as f64 * 0.6).round_ties_even() as i64;
    let kept_live = topk_mask(&live_values, k);
    let expected = live.masked_scatter(&live, &kept_live);
    let ours = Tensor::cat(&paths.map(|p| mask_of(&model, p)), 0);
    assert!(ours.equal(&expected));
}

/// Many tensors of uneven sizes, already mostly pruned (so their live entries are gathered and
/// shared among the cores across tensor boundaries), with ties at the threshold: exactly the
/// requested count is pruned, nothing kept is smaller than anything pruned, and the tied
/// entries are taken in concatenation order.
#[test]
fn second_global_round_over_many_tensors_with_ties_takes_ties_in_order() {
    tch::manual_seed(4);
    let sizes: Vec<i64> = (0..40).map(|i| 20_000 + (i * 7919) % 150_000).collect();
    let state: Vec<(String, Tensor)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let t = Tensor::randint_low(-500, 500, [n], (Kind::Int64, Device::Cpu));
            (format!("layer{i}.weight"), t.to_kind(Kind::Float))
        })
        .collect();
    let all = Tensor::cat(&state.iter().map(|(_, t)| t).collect::<Vec<_>>(), 0);
    let paths: Vec<String> = state.iter().map(|(k, _)| k.clone()).collect();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let mut model = module_from_state_dict(state).unwrap();
    let global = |model: &mut Module, amount| {
        let method = Arc::new(L1Unstructured::new(amount).unwrap());
        prune::global_unstructured(model, &paths, method, &[]).unwrap();
    };
    let masks = |model: &Module| {
        Tensor::cat(
            &paths.iter().map(|p| mask_of(model, p)).collect::<Vec<_>>(),
            0,
        )
    };
    global(&mut model, 0.6);
    let before = masks(&model);
    global(&mut model, 0.5);
    let after = masks(&model);

    let live = before.sum(Kind::Int64).int64_value(&[]);
    assert!(live > 1 << 20, "beyond the ties resolved by topk");
    let k = (live as f64 * 0.5).round_ties_even() as i64;
    let newly_pruned = before.logical_and(&after.logical_not());
    assert_eq!(newly_pruned.sum(Kind::Int64).int64_value(&[]), k);
    assert!(
        after
            .logical_and(&before.logical_not())
            .sum(Kind::Int64)
            .int64_value(&[])
            == 0
    );
    let magnitudes = all.abs();
    let largest_pruned = magnitudes
        .masked_select(&newly_pruned)
        .max()
        .double_value(&[]);
    let kept = magnitudes.masked_select(&after);
    assert!(largest_pruned <= kept.min().double_value(&[]));
    let tied = magnitudes.eq(largest_pruned).logical_and(&before);
    let tied_pruned_positions = Tensor::nonzero(&tied.logical_and(&newly_pruned));
    let tied_kept_positions = Tensor::nonzero(&tied.logical_and(&after));
    assert!(tied_pruned_positions.numel() > 0 && tied_kept_positions.numel() > 0);
    assert!(
        tied_pruned_positions.max().int64_value(&[]) < tied_kept_positions.min().int64_value(&[]),
        "tied entries are taken in concatenation order"
    );
}
