//! Every way `tchprune apply` can be asked the impossible: a non-zero exit, one clear line on
//! stderr naming the step and the problem, and no output file at all.

mod common;

use serde_json::json;
use std::path::Path;

/// What a case writes as the plan file: JSON, or raw text.
enum PlanFile {
    Json(serde_json::Value),
    Text(&'static str),
    Missing,
}

fn refused(name: &str, plan: PlanFile, extra: &[&str], fragments: &[&str]) {
    let apply = common::apply_args("lenet.safetensors", "out.safetensors");
    let args: Vec<&str> = apply.iter().chain(extra).copied().collect();
    refused_with(name, plan, |_| {}, &args, fragments);
}

/// Runs `tchprune args` in a directory holding LeNet's checkpoint, `plan` and whatever `setup`
/// adds, and checks the refusal.
fn refused_with(
    name: &str,
    plan: PlanFile,
    setup: impl FnOnce(&Path),
    args: &[&str],
    fragments: &[&str],
) {
    common::refused_in(
        name,
        |dir| {
            match plan {
                PlanFile::Json(plan) => common::write_plan(dir, &plan),
                PlanFile::Text(text) => std::fs::write(dir.join("plan.json"), text).unwrap(),
                PlanFile::Missing => {}
            }
            setup(dir);
        },
        args,
        fragments,
    );
}

fn step(step: serde_json::Value) -> PlanFile {
    PlanFile::Json(json!({"steps": [
        {"method": "identity", "params": ["fc1.bias"]},
        step,
    ]}))
}

#[test]
fn bad_missing_and_unknown_arguments() {
    refused(
        "negative amount",
        step(json!({"method": "l1_unstructured", "params": ["fc1.weight"], "amount": -0.5})),
        &[],
        &["plan step 2 (l1_unstructured)", "invalid amount -0.5"],
    );
    refused(
        "fraction above 1",
        step(json!({"method": "random_unstructured", "params": ["fc1.weight"], "amount": 1.5})),
        &[],
        &["plan step 2 (random_unstructured)", "1.5"],
    );
    refused(
        "missing amount",
        step(json!({"method": "l1_unstructured", "params": ["fc1.weight"]})),
        &[],
        &[
            "plan step 2 (l1_unstructured)",
            "'amount'",
            "missing required argument",
        ],
    );
    refused(
        "misspelt argument",
        step(json!({"method": "l1_unstructured", "params": ["fc1.weight"], "amout": 0.5})),
        &[],
        &[
            "plan step 2 (l1_unstructured)",
            "'amout'",
            "unexpected argument",
        ],
    );
    refused(
        "bad norm",
        step(
            json!({"method": "ln_structured", "params": ["fc1.weight"], "amount": 0.5, "n": "nuc", "dim": 0}),
        ),
        &[],
        &["plan step 2 (ln_structured)", "nuc"],
    );
    refused(
        "missing pruning_method",
        step(json!({"method": "global_unstructured", "params": ["fc1.weight"], "amount": 0.5})),
        &[],
        &[
            "plan step 2 (global_unstructured)",
            "missing 'pruning_method'",
        ],
    );
    refused(
        "mask_file for another method",
        step(
            json!({"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.5, "mask_file": "m.safetensors"}),
        ),
        &[],
        &[
            "plan step 2 (l1_unstructured)",
            "'mask_file' is only for custom_from_mask",
        ],
    );
}

#[test]
fn unknown_methods_keys_and_patterns() {
    refused(
        "unknown method",
        step(json!({"method": "l2_unstructured", "params": ["fc1.weight"], "amount": 0.5})),
        &[],
        &[
            "plan step 2 (l2_unstructured)",
            "unknown pruning method 'l2_unstructured'",
        ],
    );
    refused(
        "unknown key",
        step(json!({"method": "identity", "params": ["fc9.weight"]})),
        &[],
        &[
            "plan step 2 (identity)",
            "'fc9.weight' matches no parameter",
        ],
    );
    refused(
        "pattern matching nothing",
        step(json!({"method": "identity", "params": ["conv1.weight", "conv*.gamma"]})),
        &[],
        &[
            "plan step 2 (identity)",
            "'conv*.gamma' matches no parameter",
        ],
    );
    refused(
        "a mask key is not a parameter key",
        PlanFile::Json(json!({"steps": [
            {"method": "identity", "params": ["fc1.bias"]},
            {"method": "identity", "params": ["fc1.bias_mask"]},
        ]})),
        &[],
        &[
            "plan step 2 (identity)",
            "'fc1.bias_mask' matches no parameter",
        ],
    );
}

#[test]
fn steps_that_fail_on_the_tensors() {
    refused(
        "remove of an unpruned key",
        step(json!({"method": "remove", "params": ["fc1.weight"]})),
        &[],
        &[
            "plan step 2 (remove) on 'fc1.weight'",
            "has to be pruned before pruning can be removed",
        ],
    );
    refused(
        "structured method in global pruning",
        step(
            json!({"method": "global_unstructured", "pruning_method": "ln_structured",
                    "params": ["fc1.weight"], "amount": 0.5, "n": 2, "dim": 0}),
        ),
        &[],
        &[
            "plan step 2 (global_unstructured)",
            "only \"unstructured\" methods",
        ],
    );
    refused(
        "dim out of range",
        step(
            json!({"method": "ln_structured", "params": ["fc1.weight"], "amount": 0.5, "n": 1, "dim": 2}),
        ),
        &[],
        &[
            "plan step 2 (ln_structured) on 'fc1.weight'",
            "invalid dim 2",
        ],
    );
    refused(
        "count larger than the units",
        step(json!({"method": "l1_unstructured", "params": ["fc3.bias"], "amount": 11})),
        &[],
        &[
            "plan step 2 (l1_unstructured) on 'fc3.bias'",
            "amount=11 should be smaller",
            "=10",
        ],
    );
    refused(
        "structured pruning of a vector",
        step(json!({"method": "random_structured", "params": ["fc3.bias"], "amount": 1, "dim": 0})),
        &[],
        &[
            "plan step 2 (random_structured) on 'fc3.bias'",
            "multidimensional",
        ],
    );
    refused(
        "side file without the key",
        PlanFile::Json(json!({"steps": [
            {"method": "l1_unstructured", "params": ["fc3.bias"], "amount": 1, "scores_file": "lenet.safetensors"},
            {"method": "l1_unstructured", "params": ["fc3.bias"], "amount": 1, "scores_file": "missing.safetensors"},
        ]})),
        &[],
        &["plan step 2 (l1_unstructured)", "missing.safetensors"],
    );
}

#[test]
fn unreadable_plans() {
    refused(
        "no plan file",
        PlanFile::Missing,
        &[],
        &["plan plan.json: cannot be read"],
    );
    refused(
        "not JSON",
        PlanFile::Text("{\"steps\": [,]}"),
        &[],
        &["plan plan.json: not valid JSON"],
    );
    refused(
        "not an object",
        PlanFile::Text("[1, 2]"),
        &[],
        &["must be a JSON object"],
    );
    refused(
        "no steps",
        PlanFile::Json(json!({"seed": 1})),
        &[],
        &["missing 'steps'"],
    );
    refused(
        "unknown top-level key",
        PlanFile::Json(json!({"stpes": []})),
        &[],
        &["unknown key 'stpes'"],
    );
    refused(
        "step without params",
        PlanFile::Json(json!({"steps": [{"method": "identity"}]})),
        &[],
        &["step 1: missing 'params'"],
    );
    refused(
        "seed that is not an integer",
        PlanFile::Json(json!({"seed": "seven", "steps": []})),
        &[],
        &["'seed' must be an integer"],
    );
}

#[test]
fn bad_inputs_and_outputs() {
    let plan =
        || PlanFile::Json(json!({"steps": [{"method": "identity", "params": ["fc1.bias"]}]}));
    let apply_to = |input: &'static str, output: &'static str| {
        vec!["apply", input, "--plan", "plan.json", "-o", output]
    };
    refused_with(
        "corrupt input",
        plan(),
        |dir| {
            std::fs::write(
                dir.join("corrupt.safetensors"),
                b"\x10\0\0\0\0\0\0\0{\"a\": 1}garbage",
            )
            .unwrap()
        },
        &apply_to("corrupt.safetensors", "out.safetensors"),
        &["corrupt.safetensors: not a readable safetensors file"],
    );
    refused_with(
        "truncated input",
        plan(),
        |dir| {
            let bytes = std::fs::read(dir.join("lenet.safetensors")).unwrap();
            std::fs::write(dir.join("cut.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
        },
        &apply_to("cut.safetensors", "out.safetensors"),
        &["cut.safetensors: not a readable safetensors file"],
    );
    refused_with(
        "missing input",
        plan(),
        |_| {},
        &apply_to("nothing.safetensors", "out.safetensors"),
        &["nothing.safetensors", "No such file"],
    );
    refused_with(
        "output over the input",
        plan(),
        |_| {},
        &apply_to("lenet.safetensors", "./lenet.safetensors"),
        &["is the input"],
    );
    refused_with(
        "output in a missing directory",
        plan(),
        |_| {},
        &apply_to("lenet.safetensors", "no/such/dir/out.safetensors"),
        &["no/such/dir/out.safetensors"],
    );
}

#[test]
fn bad_plugins() {
    let foobar_plan =
        || PlanFile::Json(json!({"steps": [{"method": "foobar", "params": ["fc1.bias"]}]}));
    refused(
        "missing plugin",
        foobar_plan(),
        &["--plugin", "libnothing.so"],
        &["plugin libnothing.so: no such file"],
    );
    refused(
        "missing plugin in the plan",
        PlanFile::Json(json!({"plugins": ["libnothing.so"], "steps": []})),
        &[],
        &["libnothing.so: no such file"],
    );
    let not_a_plugin = common::workspace::plugin("tchprune-fixture-not-a-plugin");
    refused(
        "not a plugin",
        foobar_plan(),
        &["--plugin", not_a_plugin.to_str().unwrap()],
        &["is not a tchprune plugin"],
    );
    let misbehaving = common::workspace::plugin("tchprune-fixture-misbehaving");
    let path = misbehaving.to_str().unwrap();
    for (method, problem) in [
        ("not_binary", "a mask may hold only 0 and 1"),
        ("panics", "this method always panics"),
        ("fails", "this method always fails"),
    ] {
        refused(
            method,
            step(json!({"method": method, "params": ["fc1.weight"]})),
            &["--plugin", path],
            &[
                &format!("plan step 2 ({method}) on 'fc1.weight'"),
                problem,
                path,
            ],
        );
    }
}
