//! The one-shot example's pieces, shortened: the corpus split by file, a few training steps that
//! lower the loss and leave a Hugging Face directory a second run continues from, and a pruning
//! whose perplexity is measured on the fixed windows.

use tch::{Device, Kind};
use tchprune::llm::{self, Llama};
use tchprune_examples::corpus::Corpus;
use tchprune_examples::tiny_llm::{self, Setting, Training};

/// A corpus of 40 small Python files.
fn corpus(dir: &std::path::Path) -> Corpus {
    for i in 0..40 {
        let text = format!("def function_{i}(x):\n    return x * {i} + {}\n\n", i * 7).repeat(60);
        std::fs::write(dir.join(format!("module_{i}.py")), text).unwrap();
    }
    std::fs::create_dir(dir.join("site-packages")).unwrap();
    std::fs::write(dir.join("site-packages/ignored.py"), "ignored").unwrap();
    Corpus::read(dir).unwrap()
}

#[test]
fn trains_saves_continues_and_prunes() {
    let scratch = tempfile::tempdir().unwrap();
    let source = scratch.path().join("src");
    std::fs::create_dir(&source).unwrap();
    let corpus = corpus(&source);
    assert_eq!(corpus.files, 40);
    assert!(!corpus.train.is_empty() && !corpus.eval.is_empty() && !corpus.calibration.is_empty());
    let out = scratch.path().join("run");
    std::fs::create_dir(&out).unwrap();
    let mut training = Training {
        steps: 12,
        batch: 4,
        seqlen: 64,
        learning_rate: 3e-3,
        budget: std::time::Duration::from_secs(600),
        seed: 0,
    };
    let mut losses = Vec::new();
    let first = tiny_llm::train(&out, &corpus, &training, Device::Cpu, |_, loss| {
        losses.push(loss)
    })
    .unwrap();
    assert_eq!((first.steps, first.new_steps), (12, 12));
    assert!(losses.len() == 1 && losses[0].is_finite() && first.loss == losses[0]);
    // Done already: nothing more; asked for more: it goes on from the saved model.
    assert_eq!(
        tiny_llm::train(&out, &corpus, &training, Device::Cpu, |_, _| {})
            .unwrap()
            .new_steps,
        0
    );
    training.steps = 14;
    assert_eq!(
        tiny_llm::train(&out, &corpus, &training, Device::Cpu, |_, _| {})
            .unwrap()
            .new_steps,
        2
    );

    let model_dir = out.join("model");
    let loaded = Llama::from_directory(&model_dir, Some(Kind::Float), Device::Cpu).unwrap();
    assert_eq!(loaded.model.config(), &{
        let mut c = tiny_llm::model_config();
        c.dtype = Some(Kind::Float);
        c
    });
    let eval = tiny_llm::eval_windows(&corpus.eval, 4, 64);
    assert_eq!(eval.size(), [4, 64]);
    let calibration =
        llm::random_windows(&llm::byte_tokens(&corpus.calibration), 4, 64, 0).unwrap();
    let dense = llm::perplexity(&loaded.model, &eval, 2).unwrap();
    assert!(dense < 256.0, "a few steps already beat guessing: {dense}");
    let (pruned, seconds) = tiny_llm::prune_and_evaluate(
        &model_dir,
        "sparsegpt",
        Setting::TwoFour,
        &calibration,
        &eval,
        Device::Cpu,
    )
    .unwrap();
    assert!(pruned.is_finite() && pruned != dense && seconds > 0.0);
}
