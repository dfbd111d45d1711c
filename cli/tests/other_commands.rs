//! `tchprune stats`, `methods`, `finalize` and `demo`.

mod common;

use serde_json::{json, Value};

fn pruned_lenet() -> tempfile::TempDir {
    let plan = json!({"steps": [
        {"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.75},
        {"method": "ln_structured", "params": ["conv1.weight"], "amount": 3, "n": 2, "dim": 0},
    ]});
    let (dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(run.success, "{}", run.stderr);
    dir
}

#[test]
fn stats_reports_each_parameter_and_the_total() {
    let dir = pruned_lenet();
    let run = common::tchprune_in(dir.path(), &["stats", "out.safetensors", "--json"]);
    assert!(run.success, "{}", run.stderr);
    let stats: Value = serde_json::from_str(&run.stdout).unwrap();
    let parameters = stats["parameters"].as_array().unwrap();
    assert_eq!(
        parameters.len(),
        10,
        "LeNet's 10 parameters, pruned pairs as one"
    );
    let fc1 = parameters
        .iter()
        .find(|p| p["key"] == "fc1.weight")
        .unwrap();
    assert_eq!(fc1["pruned"], true);
    assert_eq!(fc1["zeros"], 36_000);
    assert_eq!(fc1["total"], 48_000);
    assert_eq!(fc1["sparsity"], 0.75);
    assert_eq!(
        fc1["history"],
        json!([{"method": "l1_unstructured", "amount": 0.75}])
    );
    let conv1 = parameters
        .iter()
        .find(|p| p["key"] == "conv1.weight")
        .unwrap();
    assert_eq!(conv1["zeros"], 27);
    let fc2 = parameters
        .iter()
        .find(|p| p["key"] == "fc2.weight")
        .unwrap();
    assert_eq!(fc2["pruned"], false);
    let total_entries: i64 = parameters
        .iter()
        .map(|p| p["total"].as_i64().unwrap())
        .sum();
    assert_eq!(stats["total"]["total"], total_entries);
    assert!(stats["total"]["zeros"].as_i64().unwrap() >= 36_027);

    let table = common::tchprune_in(dir.path(), &["stats", "out.safetensors"]);
    assert!(table.success);
    let fc1_row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("fc1.weight"))
        .unwrap();
    assert!(
        fc1_row.contains("yes") && fc1_row.contains("36000") && fc1_row.contains("75.00%"),
        "{fc1_row}"
    );
    let lines: Vec<&str> = table.stdout.lines().collect();
    // the table ends with the total, then the bytes of each form
    assert!(lines[lines.len() - 2].starts_with("total"), "{lines:?}");
    let bytes = lines[lines.len() - 1];
    assert!(
        bytes.starts_with("bytes: this file ") && bytes.contains("plain 240296"),
        "{bytes}"
    );
}

#[test]
fn methods_lists_builtins_and_plugins_with_their_origin() {
    let dir = tempfile::tempdir().unwrap();
    let builtins = common::tchprune_in(dir.path(), &["methods"]);
    assert!(builtins.success);
    for (name, kind) in [
        ("identity", "unstructured"),
        ("l1_unstructured", "unstructured"),
        ("random_unstructured", "unstructured"),
        ("ln_structured", "structured"),
        ("random_structured", "structured"),
        ("custom_from_mask", "global"),
    ] {
        let line = builtins
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        assert!(line.contains(kind) && line.contains("built-in"), "{line}");
    }
    let nm = common::workspace::plugin("tchprune-plugin-nm");
    let foobar = common::workspace::plugin("tchprune-plugin-foobar");
    let with_plugins = common::tchprune_in(
        dir.path(),
        &[
            "methods",
            "--plugin",
            nm.to_str().unwrap(),
            "--plugin",
            foobar.to_str().unwrap(),
        ],
    );
    assert!(with_plugins.success, "{}", with_plugins.stderr);
    let nm_line = with_plugins
        .stdout
        .lines()
        .find(|l| l.starts_with("nm "))
        .unwrap();
    assert!(
        nm_line.contains("global") && nm_line.contains(&format!("plugin {}", nm.display())),
        "{nm_line}"
    );
    let foobar_line = with_plugins
        .stdout
        .lines()
        .find(|l| l.starts_with("foobar "))
        .unwrap();
    assert!(
        foobar_line.contains("unstructured") && foobar_line.contains("libtchprune_plugin_foobar")
    );

    // A directory of plugins loads all of them.
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for file in [&nm, &foobar] {
        std::fs::copy(file, plugins.join(file.file_name().unwrap())).unwrap();
    }
    let from_dir = common::tchprune_in(dir.path(), &["methods", "--plugin", "plugins"]);
    assert!(from_dir.success, "{}", from_dir.stderr);
    let listed = |name: &str| {
        from_dir
            .stdout
            .lines()
            .any(|l| l.starts_with(name) && l.contains("plugin plugins/"))
    };
    assert!(listed("nm ") && listed("foobar "), "{}", from_dir.stdout);
}

#[test]
fn finalize_makes_every_pruning_permanent() {
    let dir = pruned_lenet();
    let before = std::fs::read(dir.path().join("out.safetensors")).unwrap();
    let run = common::tchprune_in(
        dir.path(),
        &["finalize", "out.safetensors", "-o", "final.safetensors"],
    );
    assert!(run.success, "{}", run.stderr);
    assert_eq!(
        std::fs::read(dir.path().join("out.safetensors")).unwrap(),
        before
    );
    let pruned = dir.path().join("out.safetensors");
    let plain = common::read(&dir.path().join("final.safetensors"));
    assert_eq!(plain.len(), 10);
    assert!(plain
        .iter()
        .all(|(k, _)| !k.ends_with("_orig") && !k.ends_with("_mask")));
    let weight = common::tensor(&dir.path().join("final.safetensors"), "fc1.weight");
    let expected =
        common::tensor(&pruned, "fc1.weight_orig") * common::tensor(&pruned, "fc1.weight_mask");
    assert!(common::identical(&weight, &expected));

    let refused = common::tchprune_in(
        dir.path(),
        &["finalize", "out.safetensors", "-o", "out.safetensors"],
    );
    assert!(!refused.success);
    assert!(refused.stderr.contains("is the input"));
}

#[test]
fn demo_walks_through_the_tutorial() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::tchprune_in(dir.path(), &["demo"]);
    assert!(run.success, "{}", run.stderr);
    for expected in ["weight_orig", "weight_mask", "Global sparsity", "foobar"] {
        assert!(
            run.stdout.contains(expected),
            "'{expected}' missing from the demo:\n{}",
            run.stdout
        );
    }
}

#[test]
fn usage_errors_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::tchprune_in(dir.path(), &["apply", "in.safetensors"]);
    assert!(!run.success);
    assert!(run.stderr.contains("--plan"), "{}", run.stderr);
    let run = common::tchprune_in(dir.path(), &["stats", "missing.safetensors"]);
    assert!(!run.success);
    assert!(run.stderr.contains("missing.safetensors"));
}
