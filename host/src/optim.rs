//! Optimizers that know the masks: training a pruned model for less than a dense one.
//!
//! With the masks written into the variables ([`VarStorePruner`]), any optimizer trains a
//! pruned model, and [`VarStorePruner::step`] puts the pruned entries back to zero after each
//! step: one more pass over every pruned weight. [`MaskedAdam`] folds the masks into Adam's
//! update instead: one fused pass per tensor that reads and writes only the entries the mask
//! keeps, with Adam's moments stored for those entries only. Pruned entries are never written,
//! so they stay exactly zero, and at 90% sparsity a step moves a fraction of the memory that
//! libtorch's Adam moves (nine separate passes over every entry and its moments).
//!
//! On the [`Module`](crate::Module) path (PyTorch's reparametrization) libtorch's Adam costs
//! more still: the gradient of `name_orig` is zero wherever the mask prunes, so are Adam's
//! second moments there, and libtorch's square root of zero took five times as long as of
//! other floats on our CPU (AMD EPYC, libtorch 2.11). `MaskedAdam` steps such a module's
//! `name_orig` at its kept entries only and leaves the pruned ones as they are. libtorch's Adam
//! leaves them as they are too when the weight decay is zero and the tensor was pruned before
//! its first step; otherwise it keeps moving them (decay, momentum from before the pruning),
//! which the forward pass never sees, since it reads `orig * mask`.
//!
//! The arithmetic is libtorch's `torch::optim::Adam` (L2 weight decay added to the gradient,
//! bias corrections in `f64`, fused multiply-adds where libtorch's vectorized kernels use
//! them), entry by entry. It is not bit for bit libtorch's: libtorch takes square roots
//! through MKL's vector library, which is not correctly rounded, so kept entries drift from a
//! libtorch-trained twin by a few units in the last place per step. Where bit-identical
//! training matters, use tch's `nn::Adam` (with [`VarStorePruner::step`] on a `VarStore`).

use crate::cpu::has_avx2_fma;
use crate::engine::TrainingMasks;
use crate::error::{PruneError, Result};
use crate::mask_in_place::bump_version;
use crate::parallel;
use crate::product_cache::version;
use crate::prune::Prunable;
use crate::tensor_data::{entries, entries_mut};
#[cfg(doc)]
use crate::VarStorePruner;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// Below this many entries per worker, an update runs on the calling thread.
const MIN_ENTRIES_PER_THREAD: usize = 1 << 16;

/// Adam for the variables of a `VarStore` whose pruned entries it never touches.
///
/// ```
/// use tch::{nn, nn::ModuleT, Device, Kind, Tensor};
/// use tchprune::{optim::MaskedAdam, prune, VarStorePruner};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let net = nn::linear(vs.root() / "fc", 32, 4, Default::default());
/// let mut pruner = VarStorePruner::new(&vs);
/// prune::l1_unstructured(&mut pruner, "fc.weight", 0.9, None)?;
/// let mut adam = MaskedAdam::new(&vs, nn::Adam { wd: 1e-4, ..Default::default() }, 1e-3)?;
/// for _ in 0..3 {
///     let xs = Tensor::randn([8, 32], (Kind::Float, Device::Cpu));
///     let loss = net.forward_t(&xs, true).square().mean(Kind::Float);
///     adam.backward_step(&pruner, &loss)?;
/// }
/// assert_eq!(pruner.sparsity(&["fc.weight"])?[0].zeros, 115);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A [`Module`](crate::Module) built on the store is pruned and trained the same way:
///
/// ```
/// use tch::{nn, Device, Kind, Tensor};
/// use tchprune::{layers, optim::MaskedAdam, prune};
///
/// let vs = nn::VarStore::new(Device::Cpu);
/// let mut net = layers::linear(&(vs.root() / "fc"), 32, 4, Default::default());
/// prune::l1_unstructured(&mut net, "weight", 0.9, None)?;
/// let mut adam = MaskedAdam::new(&vs, nn::Adam::default(), 1e-3)?;
/// let xs = Tensor::randn([8, 32], (Kind::Float, Device::Cpu));
/// let loss = net.forward_t(&xs, true).square().mean(Kind::Float);
/// adam.backward_step(&net, &loss)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MaskedAdam {
    config: nn::Adam,
    lr: f64,
    variables: Arc<Mutex<nn::Variables>>,
    /// Only for `zero_grad`: libtorch's, which drops the gradients as tch's `nn::Adam` does.
    gradients: nn::Optimizer,
    states: HashMap<String, State>,
    /// libtorch's own Adam for the variables the fused update does not handle (other dtypes,
    /// other devices), created with the first of them.
    fallback: Option<Fallback>,
}

/// libtorch's Adam over some variables, the masks applied after its step.
struct Fallback {
    adam: tch::COptimizer,
    names: HashSet<String>,
}

impl std::fmt::Debug for MaskedAdam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskedAdam")
            .field("config", &self.config)
            .field("lr", &self.lr)
            .finish_non_exhaustive()
    }
}

/// One variable's step count and moments.
struct State {
    step: i64,
    moments: Moments,
}

enum Moments {
    F32(Fused<f32>),
    F64(Fused<f64>),
}

/// Moments for every entry, or (when pruned) for the kept entries only, in index order.
struct Fused<T> {
    m: Vec<T>,
    v: Vec<T>,
    kept: Option<Kept>,
}

/// The entries a mask keeps among `len`, and the mask they were read from.
struct Kept {
    indices: Vec<usize>,
    len: usize,
    id: MaskId,
    /// A module's mask buffer, held so that no other tensor takes its address while `id` names
    /// it.
    _held: Option<Tensor>,
}

/// What identifies a variable's mask: it differs as soon as the mask does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MaskId {
    /// A [`VarStorePruner`]'s generation of the variable's mask.
    Generation(u64),
    /// A [`Module`](crate::Module)'s mask buffer: its address and version counter.
    Buffer { address: usize, version: i64 },
}

/// The mask of the trainable variable `name` (the tensor `variable`), if pruned.
fn mask_of<'a>(
    masks: &TrainingMasks<'a>,
    name: &str,
    variable: &Tensor,
) -> Option<(&'a Tensor, MaskId)> {
    match masks {
        TrainingMasks::Zeroed(pruner) => pruner
            .mask_generation(name)
            .map(|(mask, generation)| (mask, MaskId::Generation(generation))),
        TrainingMasks::Reparametrized(by_orig) => by_orig
            .get(&(variable.data_ptr() as usize))
            .filter(|_| variable.numel() > 0)
            .map(|&mask| {
                let id = MaskId::Buffer {
                    address: mask.data_ptr() as usize,
                    version: version(mask),
                };
                (mask, id)
            }),
    }
}

/// The scalars of one step, in the element type.
#[derive(Clone, Copy)]
struct Coefficients<T> {
    beta1: T,
    beta2: T,
    one_minus_beta1: T,
    one_minus_beta2: T,
    weight_decay: Option<T>,
    sqrt_bias_correction2: T,
    eps: T,
    neg_step_size: T,
}

/// The float types updated in Rust.
trait Element: Copy + Default + Send + Sync + std::ops::Add<Output = Self> + 'static {
    fn from_f64(x: f64) -> Self;
    fn fma(self, a: Self, b: Self) -> Self;
    fn mul(self, other: Self) -> Self;
    fn div(self, other: Self) -> Self;
    fn sqrt(self) -> Self;
}

macro_rules! element {
    ($t:ty) => {
        impl Element for $t {
            #[inline(always)]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline(always)]
            fn fma(self, a: Self, b: Self) -> Self {
                self.mul_add(a, b)
            }
            #[inline(always)]
            fn mul(self, other: Self) -> Self {
                self * other
            }
            #[inline(always)]
            fn div(self, other: Self) -> Self {
                self / other
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
        }
    };
}

element!(f32);
element!(f64);

/// `x * a + b`, in one rounding when `FUSED`.
#[inline(always)]
fn mul_add<T: Element, const FUSED: bool>(x: T, a: T, b: T) -> T {
    if FUSED {
        x.fma(a, b)
    } else {
        x.mul(a) + b
    }
}

/// One entry's update, in libtorch's order of operations; returns the new value.
#[inline(always)]
fn update<T: Element, const FUSED: bool>(
    p: T,
    g: T,
    m: &mut T,
    v: &mut T,
    c: &Coefficients<T>,
) -> T {
    let g = match c.weight_decay {
        Some(wd) => mul_add::<T, FUSED>(p, wd, g),
        None => g,
    };
    *m = mul_add::<T, FUSED>(g, c.one_minus_beta1, m.mul(c.beta1));
    *v = mul_add::<T, FUSED>(c.one_minus_beta2.mul(g), g, v.mul(c.beta2));
    let denom = v.sqrt().div(c.sqrt_bias_correction2) + c.eps;
    p + c.neg_step_size.mul(*m).div(denom)
}

/// A pointer that worker threads share; each writes entries no other one does.
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: the workers of one update write disjoint entries (see `update_kept`).
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for Shared<T> {}

impl<T> Shared<T> {
    /// The pointer (a method, so that closures capture the `Send` wrapper, not its field).
    fn get(self) -> *mut T {
        self.0
    }
}

/// Every entry of `p`, in a loop the compiler vectorizes.
#[inline(always)]
fn dense_chunk<T: Element, const FUSED: bool>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    c: &Coefficients<T>,
) {
    for (((p, g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *p = update::<T, FUSED>(*p, *g, m, v, c);
    }
}

/// The entries of `p` at `indices`, whose moments are `m[k]`, `v[k]` for `indices[k]`.
///
/// # Safety
/// `p` and `g` hold every index of `indices`, and no other thread writes those entries.
#[inline(always)]
unsafe fn kept_chunk<T: Element, const FUSED: bool>(
    p: Shared<T>,
    g: *const T,
    indices: &[usize],
    m: &mut [T],
    v: &mut [T],
    c: &Coefficients<T>,
) {
    for ((&i, m), v) in indices.iter().zip(m.iter_mut()).zip(v.iter_mut()) {
        // SAFETY: the caller's promise.
        unsafe {
            let p = p.get().add(i);
            *p = update::<T, FUSED>(*p, *g.add(i), m, v, c);
        }
    }
}

/// [`dense_chunk`] with AVX2 and fused multiply-adds.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dense_chunk_avx2<T: Element>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    c: &Coefficients<T>,
) {
    dense_chunk::<T, true>(p, g, m, v, c);
}

/// [`kept_chunk`] with AVX2 and fused multiply-adds.
///
/// # Safety
/// As [`kept_chunk`], and the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kept_chunk_avx2<T: Element>(
    p: Shared<T>,
    g: *const T,
    indices: &[usize],
    m: &mut [T],
    v: &mut [T],
    c: &Coefficients<T>,
) {
    // SAFETY: forwarded.
    unsafe { kept_chunk::<T, true>(p, g, indices, m, v, c) }
}

/// How many entries each worker takes when `count` entries are shared among the cores (an
/// update costs more per entry than the passes `crate::parallel` splits, so smaller pieces pay).
fn piece_size(count: usize) -> usize {
    let workers = (count / MIN_ENTRIES_PER_THREAD).clamp(1, parallel::threads());
    count.div_ceil(workers).max(1)
}

/// Updates every entry of `p` (and the moments), split among threads.
fn update_dense<T: Element>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], c: &Coefficients<T>) {
    let size = piece_size(p.len());
    let pieces: Vec<_> = p
        .chunks_mut(size)
        .zip(g.chunks(size))
        .zip(m.chunks_mut(size))
        .zip(v.chunks_mut(size))
        .collect();
    let fast = has_avx2_fma();
    parallel::on_threads(pieces, |(((p, g), m), v)| {
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { dense_chunk_avx2(p, g, m, v, c) };
        }
        let _ = fast;
        dense_chunk::<T, false>(p, g, m, v, c);
    });
}

/// Updates the entries of `p` at `indices` (and their moments), split among threads.
///
/// # Safety
/// `p` and `g` point to buffers holding every index of `indices`, which increase strictly,
/// and nothing else accesses `p` meanwhile.
unsafe fn update_kept<T: Element>(
    p: Shared<T>,
    g: *const T,
    indices: &[usize],
    m: &mut [T],
    v: &mut [T],
    c: &Coefficients<T>,
) {
    let size = piece_size(indices.len());
    let pieces: Vec<_> = indices
        .chunks(size)
        .zip(m.chunks_mut(size))
        .zip(v.chunks_mut(size))
        .collect();
    let (fast, g) = (has_avx2_fma(), Shared(g.cast_mut()));
    parallel::on_threads(pieces, |((indices, m), v)| {
        // SAFETY: the pieces' indices are disjoint (strictly increasing overall), so no two
        // threads write one entry; the caller promises the buffers hold them all.
        unsafe {
            #[cfg(target_arch = "x86_64")]
            if fast {
                return kept_chunk_avx2(p, g.get(), indices, m, v, c);
            }
            let _ = fast;
            kept_chunk::<T, false>(p, g.get(), indices, m, v, c);
        }
    });
}

impl<T: Element> Fused<T> {
    /// The number of entries of the variable.
    fn len(&self) -> usize {
        match &self.kept {
            Some(kept) => kept.len,
            None => self.m.len(),
        }
    }

    fn zeros(len: usize) -> Self {
        Self {
            m: vec![T::default(); len],
            v: vec![T::default(); len],
            kept: None,
        }
    }

    /// Moments laid out for `kept` (every entry when `None`), carried over entry by entry.
    fn relayout(&mut self, len: usize, kept: Option<Kept>) {
        let dense = |values: &[T], old: Option<&Kept>| match old {
            None => values.to_vec(),
            Some(old) => {
                let mut out = vec![T::default(); len];
                for (k, &i) in old.indices.iter().enumerate() {
                    out[i] = values[k];
                }
                out
            }
        };
        let (m, v) = (
            dense(&self.m, self.kept.as_ref()),
            dense(&self.v, self.kept.as_ref()),
        );
        (self.m, self.v) = match &kept {
            None => (m, v),
            Some(new) => (
                new.indices.iter().map(|&i| m[i]).collect(),
                new.indices.iter().map(|&i| v[i]).collect(),
            ),
        };
        self.kept = kept;
    }

    /// One step of `p` (a contiguous CPU tensor of `T`) from its gradient `g`.
    fn step(
        &mut self,
        p: &Tensor,
        g: &Tensor,
        mask: Option<(&Tensor, MaskId)>,
        c: &Coefficients<T>,
    ) -> Result<()> {
        let len = p.numel();
        if let Some((mask, _)) = mask.filter(|(mask, _)| mask.size() != p.size()) {
            // The variable was given other data (`set_data`) after it was pruned.
            return Err(PruneError::MethodFailed {
                method: "MaskedAdam".to_owned(),
                reason: format!(
                    "the mask has shape {:?}, the variable {:?}: it changed shape since it \
                     was pruned",
                    mask.size(),
                    p.size()
                ),
            });
        }
        let id = mask.map(|(_, id)| id);
        if self.kept.as_ref().map(|k| k.id) != id {
            let kept = mask.map(|(mask, id)| kept_indices(mask, id)).transpose()?;
            self.relayout(len, kept);
        }
        let g = g.f_contiguous()?;
        match &self.kept {
            // SAFETY: `p` and `g` are distinct contiguous CPU tensors of `len` entries of `T`
            // (checked by the caller and above), not otherwise accessed during the update.
            None => unsafe {
                update_dense(
                    entries_mut(p, len),
                    entries(&g, len),
                    &mut self.m,
                    &mut self.v,
                    c,
                )
            },
            // SAFETY: as above, and the kept indices come in increasing order from a mask of
            // `p`'s shape (none when `p` has no entries, so the pointers are not read).
            Some(kept) => unsafe {
                let (pp, gp) = (p.data_ptr().cast::<T>(), g.data_ptr().cast::<T>());
                update_kept(Shared(pp), gp, &kept.indices, &mut self.m, &mut self.v, c)
            },
        }
        Ok(bump_version(p)?)
    }
}

/// The flat indices of the entries `mask` keeps, in increasing order.
fn kept_indices(mask: &Tensor, id: MaskId) -> Result<Kept> {
    let held = matches!(id, MaskId::Buffer { .. }).then(|| mask.shallow_clone());
    let mask = mask
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Bool)?
        .f_contiguous()?;
    // SAFETY: a contiguous CPU bool tensor, alive for the borrow.
    let keep = unsafe { entries::<bool>(&mask, mask.numel()) };
    let indices = keep
        .iter()
        .enumerate()
        .filter_map(|(i, &k)| k.then_some(i))
        .collect();
    Ok(Kept {
        indices,
        len: keep.len(),
        id,
        _held: held,
    })
}

impl MaskedAdam {
    /// Adam over the trainable variables of `vs` (those created later too), with `config`'s
    /// betas, eps and (L2) weight decay, at learning rate `lr`. `amsgrad` is not implemented:
    /// an error.
    pub fn new(vs: &nn::VarStore, config: nn::Adam, lr: f64) -> Result<Self> {
        if config.amsgrad {
            return Err(PruneError::InvalidArgument {
                method: "MaskedAdam".to_owned(),
                argument: "amsgrad".to_owned(),
                reason: "not implemented: use tch's nn::Adam with VarStorePruner::step".to_owned(),
            });
        }
        Ok(Self {
            config,
            lr,
            variables: Arc::clone(&vs.variables_),
            gradients: nn::Sgd::default().build(vs, 0.0)?,
            states: HashMap::new(),
            fallback: None,
        })
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate.
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        self.lr = lr;
        if let Some(fallback) = &mut self.fallback {
            fallback.adam.set_learning_rate(lr)?;
        }
        Ok(())
    }

    /// Drops every trainable variable's gradient (libtorch's `zero_grad`, as tch's optimizers
    /// call it).
    pub fn zero_grad(&mut self) {
        self.gradients.zero_grad();
    }

    /// One Adam step over every trainable variable with a gradient; the variables `pruned`
    /// (a [`VarStorePruner`] of the store, or a [`Module`](crate::Module) built on it) has
    /// pruned are updated at their kept entries only.
    pub fn step(&mut self, pruned: &impl Prunable) -> Result<()> {
        let masks = pruned.training_masks();
        let trainable: Vec<(String, Tensor)> = {
            let variables = self
                .variables
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            variables
                .named_variables
                .iter()
                .filter(|(_, t)| t.requires_grad())
                .map(|(name, t)| (name.clone(), t.shallow_clone()))
                .collect()
        };
        tch::no_grad(|| -> Result<()> {
            let mut by_libtorch = Vec::new();
            for (name, variable) in &trainable {
                if fusable(variable) {
                    self.step_variable(name, variable, mask_of(&masks, name, variable))
                        .map_err(|e| e.at(name))?;
                } else {
                    by_libtorch.push((name, variable));
                }
            }
            if by_libtorch.is_empty() {
                return Ok(());
            }
            let fallback = match &mut self.fallback {
                Some(fallback) => fallback,
                None => {
                    let c = self.config;
                    let adam =
                        tch::COptimizer::adam(self.lr, c.beta1, c.beta2, c.wd, c.eps, false)?;
                    self.fallback.insert(Fallback {
                        adam,
                        names: HashSet::new(),
                    })
                }
            };
            for (name, variable) in &by_libtorch {
                if fallback.names.insert((*name).clone()) {
                    fallback.adam.add_parameters(variable, 0)?;
                }
            }
            fallback.adam.step()?;
            let TrainingMasks::Zeroed(pruner) = masks else {
                // `name_orig`'s pruned entries are never read: libtorch's Adam may move them.
                return Ok(());
            };
            for (name, variable) in by_libtorch {
                if let Some((mask, _)) = pruner.mask_generation(name) {
                    let mut variable = variable.shallow_clone();
                    let _ = variable.f_mul_(&mask.f_to_device(variable.device())?)?;
                }
            }
            Ok(())
        })
    }

    /// Drops the gradients, runs `loss.backward()`, then [`MaskedAdam::step`].
    pub fn backward_step(&mut self, pruned: &impl Prunable, loss: &Tensor) -> Result<()> {
        self.zero_grad();
        loss.f_backward()?;
        self.step(pruned)
    }

    fn step_variable(
        &mut self,
        name: &str,
        p: &Tensor,
        mask: Option<(&Tensor, MaskId)>,
    ) -> Result<()> {
        let g = p.grad();
        if !g.defined() {
            return Ok(());
        }
        if g.device() != Device::Cpu || g.kind() != p.kind() {
            return Err(PruneError::MethodFailed {
                method: "MaskedAdam".to_owned(),
                reason: format!(
                    "the gradient is a {:?} tensor on {:?}, the variable a {:?} one on {:?}",
                    g.kind(),
                    g.device(),
                    p.kind(),
                    p.device()
                ),
            });
        }
        let fresh = || State {
            step: 0,
            moments: match p.kind() {
                Kind::Float => Moments::F32(Fused::zeros(p.numel())),
                _ => Moments::F64(Fused::zeros(p.numel())),
            },
        };
        let state = self.states.entry(name.to_owned()).or_insert_with(fresh);
        let fits = match &state.moments {
            Moments::F32(m) => p.kind() == Kind::Float && m.len() == p.numel(),
            Moments::F64(m) => p.kind() == Kind::Double && m.len() == p.numel(),
        };
        if !fits {
            // The variable changed dtype or shape since the last step: start over.
            *state = fresh();
        }
        state.step += 1;
        let config = self.config;
        let bias_correction1 = 1.0 - config.beta1.powf(state.step as f64);
        let bias_correction2 = 1.0 - config.beta2.powf(state.step as f64);
        let step_size = self.lr / bias_correction1;
        let c = Coefficients::<f64> {
            beta1: config.beta1,
            beta2: config.beta2,
            one_minus_beta1: 1.0 - config.beta1,
            one_minus_beta2: 1.0 - config.beta2,
            weight_decay: (config.wd != 0.0).then_some(config.wd),
            sqrt_bias_correction2: bias_correction2.sqrt(),
            eps: config.eps,
            neg_step_size: -step_size,
        };
        match &mut state.moments {
            Moments::F32(fused) => fused.step(p, &g, mask, &c.cast()),
            Moments::F64(fused) => fused.step(p, &g, mask, &c.cast()),
        }
    }
}

/// Whether the fused update handles `p`: contiguous `f32`/`f64` on the CPU.
fn fusable(p: &Tensor) -> bool {
    p.device() == Device::Cpu && p.is_contiguous() && matches!(p.kind(), Kind::Float | Kind::Double)
}

impl Coefficients<f64> {
    fn cast<T: Element>(&self) -> Coefficients<T> {
        Coefficients {
            beta1: T::from_f64(self.beta1),
            beta2: T::from_f64(self.beta2),
            one_minus_beta1: T::from_f64(self.one_minus_beta1),
            one_minus_beta2: T::from_f64(self.one_minus_beta2),
            weight_decay: self.weight_decay.map(T::from_f64),
            sqrt_bias_correction2: T::from_f64(self.sqrt_bias_correction2),
            eps: T::from_f64(self.eps),
            neg_step_size: T::from_f64(self.neg_step_size),
        }
    }
}
