//! A plugin author's first hours with the command: the same plugin named twice, a real name
//! clash, the arguments `methods` lists, a Global method given to `global_unstructured`,
//! argument errors, and every step checked before the first runs.

mod common;

use serde_json::json;

fn nm() -> String {
    common::workspace::plugin("tchprune-plugin-nm")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn the_same_plugin_in_the_plan_and_on_the_command_line_loads_once() {
    let plan = json!({"plugins": [nm()], "steps": [{"method": "nm", "params": ["fc1.weight"]}]});
    let (_dir, run) = common::apply_to_lenet(&plan, &["--plugin", &nm()]);
    assert!(run.success, "{}", run.stderr);
}

#[test]
fn two_plugin_files_with_one_method_name_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("libnm_copy.so");
    std::fs::copy(nm(), &copy).unwrap();
    let run = common::tchprune_in(
        dir.path(),
        &[
            "methods",
            "--plugin",
            &nm(),
            "--plugin",
            copy.to_str().unwrap(),
        ],
    );
    assert!(!run.success);
    assert!(
        run.stderr.contains("libtchprune_plugin_nm"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("libnm_copy.so has one too"),
        "{}",
        run.stderr
    );
}

#[test]
fn methods_lists_each_methods_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let run = common::tchprune_in(dir.path(), &["methods", "--plugin", &nm()]);
    assert!(run.success, "{}", run.stderr);
    let after = |name: &str| -> Vec<String> {
        run.stdout
            .lines()
            .skip_while(|line| !line.starts_with(name))
            .skip(1)
            .take_while(|line| line.starts_with(' '))
            .map(|line| line.trim().split(':').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(after("ln_structured"), ["amount", "n", "dim"]);
    assert_eq!(after("nm"), ["n", "m"]);
    assert!(after("identity").is_empty());
}

#[test]
fn a_global_method_is_refused_by_global_unstructured_for_its_type() {
    let plan = json!({"plugins": [nm()], "steps": [{
        "method": "global_unstructured", "pruning_method": "nm",
        "params": ["fc1.weight", "fc2.weight"], "amount": 0.5}]});
    let (_dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("method nm has the wrong PRUNING_TYPE")
            && run.stderr.contains("got global"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_plugins_argument_error_names_the_method_once() {
    let plan = json!({"plugins": [nm()], "steps": [{"method": "nm", "params": ["fc1.weight"], "n": "two"}]});
    let (_dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(!run.success);
    assert_eq!(run.stderr.matches("nm:").count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("argument 'n'"), "{}", run.stderr);
}

#[test]
fn a_shape_error_in_a_later_step_stops_the_plan_before_the_first_step_runs() {
    let misbehaving = common::workspace::plugin("tchprune-fixture-misbehaving");
    // Step 1 would fail when it runs; step 2 cannot work on fc1.weight's shape. The checker
    // sees step 2's problem first: nothing ran.
    let plan = json!({"plugins": [misbehaving], "steps": [
        {"method": "fails", "params": ["fc1.weight"]},
        {"method": "ln_structured", "params": ["fc1.weight"], "amount": 1, "n": 2, "dim": 5}]});
    let (_dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(!run.success);
    assert!(
        run.stderr
            .contains("plan step 2 (ln_structured) on 'fc1.weight'")
            && run.stderr.contains("invalid dim 5"),
        "{}",
        run.stderr
    );
    let plan = json!({"steps": [
        {"method": "l1_unstructured", "params": ["fc1.weight"], "amount": 0.5},
        {"method": "l1_unstructured", "params": ["fc3.bias"], "amount": 11},
        {"method": "custom_from_mask", "params": ["fc3.bias"], "mask": [1, 0]}]});
    let (_dir, run) = common::apply_to_lenet(&plan, &[]);
    assert!(
        run.stderr
            .contains("plan step 2 (l1_unstructured) on 'fc3.bias'")
            && run.stderr.contains("amount=11"),
        "{}",
        run.stderr
    );
}
