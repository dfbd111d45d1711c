//! The reparametrization: names, order, sizes, identity of `orig`, forward, `remove`.

mod common;

use tch::{nn, Device, Kind, Tensor};
use tchprune::{layers, prune, PruneError};

fn names(entries: Vec<(String, Tensor)>) -> Vec<String> {
    entries.into_iter().map(|(n, _)| n).collect()
}

#[test]
fn sizes_of_mask_orig_and_pruned_tensor_on_linear_and_conv3d() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut linear = layers::linear(&(vs.root() / "l"), 5, 7, layers::torch_linear_config(5));
    let mut conv = layers::conv3d(&(vs.root() / "c"), 2, 4, 3, Default::default());
    for module in [&mut linear, &mut conv] {
        let shape = module.parameter("weight").unwrap().size();
        prune::random_unstructured(module, "weight", 0.5).unwrap();
        assert_eq!(module.parameter("weight_orig").unwrap().size(), shape);
        assert_eq!(module.buffer("weight_mask").unwrap().size(), shape);
        assert_eq!(module.get("weight").size(), shape);
    }
}

#[test]
fn orig_is_the_original_tensor_and_weight_is_orig_times_mask() {
    let (_vs, mut model) = common::linear_model(6, 4);
    let before = model.parameter("weight").unwrap().copy();
    let ptr = model.parameter("weight").unwrap().data_ptr();
    prune::l1_unstructured(&mut model, "weight", 0.5, None).unwrap();
    let orig = model.parameter("weight_orig").unwrap();
    assert_eq!(orig.data_ptr(), ptr, "same storage");
    assert!(orig.equal(&before), "values untouched");
    let mask = model.buffer("weight_mask").unwrap();
    assert!(model
        .get("weight")
        .equal(&(orig * mask.to_kind(Kind::Float))));
    assert!(
        model.parameter("weight").is_none(),
        "weight is no longer a parameter"
    );
}

#[test]
fn tutorial_names_order_and_hooks() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    let conv1 = model.child_mut("conv1").unwrap();
    assert_eq!(names(conv1.named_parameters()), ["weight", "bias"]);
    assert!(conv1.named_buffers().is_empty());
    prune::random_unstructured(conv1, "weight", 0.3).unwrap();
    assert_eq!(names(conv1.named_parameters()), ["bias", "weight_orig"]);
    assert_eq!(names(conv1.named_buffers()), ["weight_mask"]);
    prune::l1_unstructured(conv1, "bias", 3, None).unwrap();
    assert_eq!(
        names(conv1.named_parameters()),
        ["weight_orig", "bias_orig"]
    );
    assert_eq!(names(conv1.named_buffers()), ["weight_mask", "bias_mask"]);
    assert_eq!(
        common::mask_values(conv1, "bias")
            .iter()
            .filter(|&&v| v == 0.0)
            .count(),
        3
    );
    prune::ln_structured(conv1, "weight", 0.5, tchprune::Norm::P(2.0), 0, None).unwrap();
    let hooks: Vec<(&str, Vec<&str>)> = conv1
        .pruning_hooks()
        .map(|h| (h.tensor_name(), h.method_names()))
        .collect();
    assert_eq!(
        hooks,
        [
            ("bias", vec!["l1_unstructured"]),
            ("weight", vec!["random_unstructured", "ln_structured"])
        ]
    );
    let keys = names(model.state_dict());
    assert_eq!(
        keys,
        [
            "conv1.weight_orig",
            "conv1.bias_orig",
            "conv1.weight_mask",
            "conv1.bias_mask",
            "conv2.weight",
            "conv2.bias",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias",
            "fc3.weight",
            "fc3.bias",
        ]
    );
    prune::remove(&mut model, "conv1.weight").unwrap();
    let conv1 = model.child("conv1").unwrap();
    assert_eq!(names(conv1.named_parameters()), ["bias_orig", "weight"]);
    assert_eq!(names(conv1.named_buffers()), ["bias_mask"]);
    assert_eq!(conv1.pruning_hooks().count(), 1);
}

#[test]
fn state_dict_masks_use_the_parameter_dtype() {
    let (_vs, mut model) = common::linear_model(3, 2);
    prune::l1_unstructured(&mut model, "weight", 2, None).unwrap();
    let state = model.state_dict();
    let mask = &state.iter().find(|(k, _)| k == "weight_mask").unwrap().1;
    assert_eq!(mask.kind(), Kind::Float);
    assert_eq!(model.buffer("weight_mask").unwrap().kind(), Kind::Bool);
}

#[test]
fn forward_through_the_module_equals_forward_by_hand_and_survives_remove() {
    let (_vs, mut model) = common::linear_model(8, 5);
    prune::l1_unstructured(&mut model, "weight", 0.6, None).unwrap();
    let x = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
    let orig = model.parameter("weight_orig").unwrap();
    let mask = model.buffer("weight_mask").unwrap().to_kind(Kind::Float);
    let by_hand = x.linear(&(orig * mask), model.parameter("bias"));
    let y = model.forward(&x);
    assert!(y.allclose(&by_hand, 1e-6, 1e-6, false));
    let ptr = orig.data_ptr();
    prune::remove(&mut model, "weight").unwrap();
    assert_eq!(
        model.parameter("weight").unwrap().data_ptr(),
        ptr,
        "the same tensor again"
    );
    assert!(model.forward(&x).equal(&y), "remove keeps the output");
    assert!(!prune::is_pruned(&model));
}

#[test]
fn remove_of_an_unpruned_tensor_is_an_error() {
    let (_vs, mut model) = common::linear_model(3, 2);
    assert!(matches!(
        prune::remove(&mut model, "weight"),
        Err(PruneError::NotPruned { .. })
    ));
    assert!(matches!(
        prune::remove(&mut model, "nothing"),
        Err(PruneError::NotPruned { .. })
    ));
}

#[test]
fn is_pruned_looks_at_every_submodule() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    assert!(!prune::is_pruned(&model));
    prune::identity(&mut model, "fc2.bias").unwrap();
    assert!(prune::is_pruned(&model));
    assert!(!prune::is_pruned(model.child("fc1").unwrap()));
}

#[test]
fn unknown_tensor_or_module_is_an_error() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut model = layers::lenet(&vs.root());
    assert!(matches!(
        prune::identity(&mut model, "conv1.nothing"),
        Err(PruneError::UnknownParameter { .. })
    ));
    assert!(matches!(
        prune::identity(&mut model, "conv9.weight"),
        Err(PruneError::UnknownModule(_))
    ));
}

#[test]
fn prune_tensor_applies_a_method_to_a_bare_tensor() {
    let t = common::tensor2(&[&[1.0, 2.0, 3.0, 4.0], &[-4.0, -3.0, -2.0, -1.0]]);
    let method = tchprune::method::L1Unstructured::new(2).unwrap();
    let pruned = prune::prune_tensor(&method, &t, None).unwrap();
    assert_eq!(
        common::values(&pruned),
        [0.0, 2.0, 3.0, 4.0, -4.0, -3.0, -2.0, 0.0]
    );
}

/// `remove` leaves `orig * mask` exactly as libtorch computes it: `-x * 0` is `-0.0`, NaN and
/// infinities times 0 are NaN, in `f32` and `f64`, on tensors long enough for the vector loops
/// and large enough to be split across threads, and the write counts as an in-place operation.
#[test]
fn remove_writes_libtorchs_products_bit_for_bit() {
    // 37 copies: the vector loops' bodies and their tails both meet every special value.
    let special = Tensor::from_slice(&[
        -1.0f32,
        2.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        3.0,
        -0.0,
    ])
    .repeat([37]);
    let special_mask = Tensor::from_slice(&[0.0f32, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]).repeat([37]);
    tch::manual_seed(5);
    let large = Tensor::randn([3 << 20], (tch::Kind::Double, tch::Device::Cpu));
    let large_mask = Tensor::rand([3 << 20], (tch::Kind::Double, tch::Device::Cpu))
        .ge(0.5)
        .to_kind(tch::Kind::Double);
    let cases = [
        (
            special.to_kind(tch::Kind::Double),
            special_mask.to_kind(tch::Kind::Double),
        ),
        (special, special_mask),
        (
            large.to_kind(tch::Kind::Float),
            large_mask.to_kind(tch::Kind::Float),
        ),
        (large, large_mask),
    ];
    for (t, mask) in cases {
        let expected = &t * &mask;
        let mut m = common::module_with_weight(&t);
        prune::custom_from_mask(&mut m, "weight", &mask).unwrap();
        let version = m.parameter("weight_orig").unwrap().internal_version();
        prune::remove(&mut m, "weight").unwrap();
        let weight = m.parameter("weight").unwrap();
        assert!(
            weight.internal_version() > version,
            "the write is an in-place operation to autograd"
        );
        let bits = |x: &Tensor| -> Vec<u64> {
            let x = x.to_kind(tch::Kind::Double);
            Vec::<f64>::try_from(x.flatten(0, -1))
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(weight), bits(&expected));
    }
}
