//! The tutorial walkthrough (the README's main job) shows every step with the expected results.

fn walkthrough() -> String {
    let mut out = Vec::new();
    tchprune_examples::tutorial::run(&mut out).expect("the walkthrough runs");
    String::from_utf8(out).expect("text")
}

#[test]
fn every_step_of_the_tutorial_is_shown() {
    let text = walkthrough();
    for step in 1..=10 {
        assert!(
            text.contains(&format!("== {step}. ")),
            "step {step} missing:\n{text}"
        );
    }
}

#[test]
fn the_walkthrough_prints_what_pytorch_prints() {
    let text = walkthrough();
    let expected = [
        r#"parameters: ["bias", "weight_orig"]"#,
        r#"buffers: ["weight_mask", "bias_mask"]"#,
        r#"history: ["random_unstructured", "ln_structured"]"#,
        r#"["conv1.weight_orig", "conv1.bias_orig", "conv1.weight_mask", "conv1.bias_mask", "conv2.weight""#,
        r#"parameters: ["bias_orig", "weight"]"#,
        "Sparsity in fc1.weight: 40.00% (19200 of 48000)",
        "Global sparsity: 20.00% (11968 of 59838)",
        "fc3.bias_mask: [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]",
    ];
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}
