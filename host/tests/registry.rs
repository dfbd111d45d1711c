//! Methods found by name and built from JSON arguments.

use serde_json::json;
use std::sync::Arc;
use tchprune::method::Identity;
use tchprune::{Origin, PruneError, PruningType, Registered, Registry};

#[test]
fn every_builtin_registers_itself() {
    let registry = Registry::with_builtins();
    let names: Vec<&str> = registry.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "custom_from_mask",
            "identity",
            "l1_unstructured",
            "ln_structured",
            "magnitude",
            "random_structured",
            "random_unstructured",
            "sparsegpt",
            "wanda"
        ]
    );
    assert!(registry.iter().all(|r| r.origin == Origin::BuiltIn));
}

#[test]
fn methods_are_built_from_json_with_pytorch_argument_names() {
    let registry = Registry::with_builtins();
    let ln = registry
        .build(
            "ln_structured",
            &json!({"amount": 0.5, "n": "inf", "dim": -1}),
        )
        .unwrap();
    assert_eq!(ln.pruning_type(), PruningType::Structured { dim: -1 });
    assert_eq!(
        ln.arguments(),
        json!({"amount": 0.5, "n": "inf", "dim": -1})
    );
    let l1 = registry
        .build("l1_unstructured", &json!({"amount": 3}))
        .unwrap();
    assert_eq!(l1.arguments(), json!({"amount": 3}));
    let custom = registry
        .build("custom_from_mask", &json!({"mask": [[1, 0], [0, 1]]}))
        .unwrap();
    assert_eq!(custom.pruning_type(), PruningType::Global);
    assert_eq!(
        registry.build("identity", &json!(null)).unwrap().name(),
        "identity"
    );
}

#[test]
fn bad_json_arguments_are_named_in_the_error() {
    let registry = Registry::with_builtins();
    let cases = [
        ("l1_unstructured", json!({}), "amount"),
        ("l1_unstructured", json!({"amount": "half"}), "amount"),
        ("l1_unstructured", json!({"amount": -1}), "amount"),
        ("l1_unstructured", json!({"amount": 0.5, "dim": 0}), "dim"),
        (
            "ln_structured",
            json!({"amount": 1, "n": "nuc", "dim": 0}),
            "n",
        ),
        ("ln_structured", json!({"amount": 1, "dim": 0}), "n"),
        ("random_structured", json!({"amount": 1, "dim": "x"}), "dim"),
        ("custom_from_mask", json!({"mask": [[1, 0], [1]]}), "mask"),
        ("l1_unstructured", json!([0.5]), "(all)"),
    ];
    for (method, args, argument) in cases {
        match registry.build(method, &args) {
            Err(PruneError::InvalidArgument { argument: a, .. }) => {
                assert_eq!(a, argument, "{method} {args}")
            }
            other => panic!("{method} {args}: {other:?}"),
        }
    }
    assert!(matches!(
        registry.build("nope", &json!({})),
        Err(PruneError::UnknownMethod(_))
    ));
}

#[test]
fn names_are_unique() {
    let mut registry = Registry::with_builtins();
    let twin = Registered::new("identity", "unstructured", "again", Origin::BuiltIn, |_| {
        Ok(Arc::new(Identity))
    });
    let err = registry.register(twin).unwrap_err();
    assert!(matches!(err, PruneError::DuplicateMethod { .. }), "{err}");
    let new = Registered::new(
        "mine",
        "unstructured",
        "mine",
        Origin::Plugin("x.so".into()),
        |_| Ok(Arc::new(Identity)),
    );
    registry.register(new).unwrap();
    assert_eq!(
        registry.get("mine").unwrap().origin.to_string(),
        "plugin x.so"
    );
}
