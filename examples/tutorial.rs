//! PyTorch's pruning tutorial on LeNet, step by step: `cargo run --release --example tutorial`.

fn main() -> anyhow::Result<()> {
    tchprune_examples::tutorial::run(&mut std::io::stdout().lock())
}
