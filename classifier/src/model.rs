//! Model files and the sparse scorer that serves them.
//!
//! A model file is JSON: the feature settings, the labels, the hashed buckets the model kept,
//! one weight row per kept bucket and the intercept. [`Scorer`] loads it into a compact table
//! (bucket → row, rows padded for SIMD) and predicts by summing the weight rows of a movement's
//! active features, adding the intercept and taking the softmax: the same arithmetic as
//! `x · W + b` over the dense matrix linfa trained on, without building that matrix. The
//! logits are divided by the model's calibration temperature before the softmax; it changes
//! the probabilities, never which label wins.
//!
//! A word's character n-grams and the word itself depend on the word alone, so a
//! [`Workspace`] remembers the summed weight rows of the words it has seen: statements repeat
//! the same few hundred words (`compra`, `pix`, `ltda`, a person's usual shops), and a word
//! seen before costs one look-up instead of a dozen. What is remembered is exactly what would
//! be computed, so a prediction never depends on what the workspace saw before. The memory
//! starts at 128 KiB and doubles, up to 1 MiB, while more than a quarter of its look-ups miss
//! (a batch of many people's movements).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::ClassifierError;
use crate::features::{
    bucket, text_scale, FeatureSettings, Features, Featurizer, HashedFeature, MovementInput, Piece,
};
use crate::labels::{Confidence, Label};

/// The format this build reads and writes. A file of another format is refused, not guessed at.
pub const MODEL_FORMAT: &str = "credit-classifier/1";

/// A trained model as stored on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Always [`MODEL_FORMAT`].
    pub format: String,
    /// How to featurise; the scorer uses exactly these settings.
    pub features: FeatureSettings,
    /// Class labels, in the order of the weight columns.
    pub labels: Vec<String>,
    /// The hashed buckets that have weights, one per weight row.
    pub buckets: Vec<u32>,
    /// `buckets.len() × labels.len()` weights, row-major.
    pub weights: Vec<f32>,
    /// One intercept per label.
    pub intercept: Vec<f32>,
    /// Calibration temperature: probabilities are `softmax(logits / temperature)`. 1 for an
    /// uncalibrated model (and for files written before calibration existed).
    #[serde(default = "one")]
    pub temperature: f32,
    /// How the model was made (data, seed, solver settings); informational.
    #[serde(default)]
    pub training: serde_json::Value,
}

fn one() -> f32 {
    1.0
}

impl ModelFile {
    /// Reads and checks a model file.
    pub fn load(path: &Path) -> Result<Self, ClassifierError> {
        let bytes = std::fs::read(path).map_err(|e| ClassifierError::io(path, e))?;
        let model_err = |problem: String| ClassifierError::Model {
            path: path.to_path_buf(),
            problem,
        };
        // Peek at the format first so an old or foreign file gets a clear answer rather than
        // a complaint about whichever field happens to differ.
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| model_err(format!("not valid JSON ({e})")))?;
        match value.get("format").and_then(|f| f.as_str()) {
            Some(MODEL_FORMAT) => {}
            Some(other) => {
                return Err(model_err(format!(
                    "format `{}` is not supported (this build reads `{MODEL_FORMAT}`)",
                    other.chars().take(64).collect::<String>()
                )))
            }
            None => {
                return Err(model_err(
                    "no `format` field: not a classifier model".into(),
                ))
            }
        }
        let model: ModelFile =
            serde_json::from_value(value).map_err(|e| model_err(e.to_string()))?;
        model.check().map_err(model_err)?;
        Ok(model)
    }

    /// Writes the model as JSON.
    pub fn save(&self, path: &Path) -> Result<(), ClassifierError> {
        let json =
            serde_json::to_vec(self).map_err(|e| ClassifierError::InvalidModel(e.to_string()))?;
        std::fs::write(path, json).map_err(|e| ClassifierError::io(path, e))
    }

    /// Checks that the parts fit together.
    pub fn check(&self) -> Result<(), String> {
        if self.format != MODEL_FORMAT {
            return Err(format!("format `{}` is not `{MODEL_FORMAT}`", self.format));
        }
        self.features.validate()?;
        let k = self.labels.len();
        if k < 2 {
            return Err(format!("{k} labels; a classifier needs at least 2"));
        }
        let mut seen = Vec::with_capacity(k);
        for l in &self.labels {
            let label = l.parse::<Label>().map_err(|e| e.to_string())?;
            if seen.contains(&label) {
                return Err(format!("label {label} is listed twice"));
            }
            seen.push(label);
        }
        if self.intercept.len() != k {
            return Err(format!(
                "{} intercepts for {k} labels",
                self.intercept.len()
            ));
        }
        if self.weights.len() != self.buckets.len() * k {
            return Err(format!(
                "{} weights, expected {} buckets × {k} labels",
                self.weights.len(),
                self.buckets.len()
            ));
        }
        let limit = 1u64 << self.features.hash_bits;
        if let Some(b) = self.buckets.iter().find(|&&b| b as u64 >= limit) {
            return Err(format!(
                "bucket {b} is outside the 2^{} hash space",
                self.features.hash_bits
            ));
        }
        let mut sorted = self.buckets.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err("a bucket is listed twice".into());
        }
        if self
            .weights
            .iter()
            .chain(&self.intercept)
            .any(|w| !w.is_finite())
        {
            return Err("a weight is not a finite number".into());
        }
        if !(self.temperature.is_finite() && (0.01..=100.0).contains(&self.temperature)) {
            return Err(format!(
                "temperature {} is outside 0.01 to 100",
                self.temperature
            ));
        }
        Ok(())
    }
}

/// One of the labels the model did not pick, with its probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alternative {
    pub label: Label,
    pub probability: f32,
}

/// What the scorer says of one movement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub label: Label,
    pub probability: f32,
    pub confidence: Confidence,
    /// The next two most probable labels, best first.
    pub runners_up: [Option<Alternative>; 2],
}

const EMPTY: u32 = u32::MAX;

/// Hash spaces up to 2^14 buckets get a direct bucket → row table (at most 64 KB, small
/// enough to stay in cache without prefetching). Only 2^13 was measured (benches/README.md);
/// a larger space keeps the probing table, which is no larger than four slots a kept bucket.
const DIRECT_MAX_BITS: u8 = 14;

/// Weight rows are padded to this many floats: at least the 19 labels, a multiple of 8 so the
/// row sum runs as whole SIMD vectors, and fixed so the accumulator lives in registers.
const STRIDE: usize = 24;

/// Serves a model: featurises movements and scores them against the sparse weights.
#[derive(Debug, Clone)]
pub struct Scorer {
    featurizer: Featurizer,
    labels: Vec<Label>,
    /// Open-addressing table of (bucket, row); `EMPTY` marks a free slot. Empty when
    /// `direct` is used.
    slots: Vec<(u32, u32)>,
    slot_mask: u32,
    /// For a hash space of at most [`DIRECT_MAX_BITS`] bits, every bucket's row (`EMPTY` for
    /// none), indexed by the bucket: 32 KB for the shipped 2^13, so a look-up is one read that
    /// stays in L1 or L2 instead of a probe into a table four times the bucket count.
    direct: Vec<u32>,
    /// Weight rows padded to [`STRIDE`] floats.
    weights: Vec<[f32; STRIDE]>,
    intercept: [f32; STRIDE],
    /// `1 / temperature`, applied to the logits before the softmax.
    inverse_temperature: f32,
    /// Tells the word memory of a [`Workspace`] which scorer filled it.
    id: u64,
    /// 1 in the lanes of a label, 0 in the padding.
    live: [f32; STRIDE],
}

/// Scorer ids: each [`Scorer::new`] takes the next, so no two models share one.
static NEXT_SCORER_ID: AtomicU64 = AtomicU64::new(1);

/// Per-thread scratch space, reused across calls so the hot path does not allocate, and the
/// memory of the words it has scored (see the module documentation). Keep one per batch or
/// per stream: the longer it lives, the more words it knows.
#[derive(Debug, Default, Clone)]
pub struct Workspace {
    features: Features,
    rows: Vec<u32>,
    /// Direct-mapped by word hash, a power of two long: [`WORD_SLOTS`] once used (empty until
    /// then), doubled up to [`MAX_WORD_SLOTS`] while too many words miss.
    words: Vec<WordSlot>,
    /// The [`Scorer::id`] whose weights `words` holds; 0 for none.
    words_of: u64,
    /// Word look-ups and misses since the memory last grew or was judged large enough.
    lookups: u32,
    misses: u32,
}

/// Words up to this many bytes are remembered; longer ones are rare and scored each time.
const REMEMBERED_WORD: usize = 24;

/// How many words a workspace remembers at first: a person's statement has a few hundred
/// distinct words, and 1,024 slots of 128 bytes stay in L2 beside the model.
const WORD_SLOTS: usize = 1024;

/// How far the memory grows for a long batch of many people's movements (a portfolio has
/// thousands of distinct words): 8,192 slots, 1 MiB. A miss costs a dozen hashes and probes
/// into tables larger than L2; a hit in L3 is still far cheaper.
const MAX_WORD_SLOTS: usize = 8192;

/// Every this many word look-ups, a memory that missed more than a quarter of them doubles.
const GROWTH_WINDOW: u32 = 4096;

/// A remembered word and the sum of its features' signed weight rows.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct WordSlot {
    /// The word's bytes, see [`word_key`].
    key: [u64; 3],
    /// 0 for a free slot: a word is never empty.
    len: u8,
    /// How many text features the word has (they all count in the text scale).
    features: u32,
    sum: [f32; STRIDE],
}

const FREE_SLOT: WordSlot = WordSlot {
    key: [0; 3],
    len: 0,
    features: 0,
    sum: [0.0; STRIDE],
};

/// The sign bit of a hashed feature, reused to tag gathered rows.
const SIGN: u32 = 1 << 31;

/// Hints the CPU to load the cache line at `p`; no effect on results, and a no-op off x86-64.
#[inline(always)]
fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing the program sees; SSE is part of the
    // x86-64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p as *const i8, core::arch::x86_64::_MM_HINT_T0);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Scorer {
    /// Builds a scorer from a checked model.
    pub fn new(model: &ModelFile) -> Result<Self, ClassifierError> {
        Self::with_direct_table_up_to(model, DIRECT_MAX_BITS)
    }

    /// [`Scorer::new`] with the direct bucket table used up to `direct_max_bits` (tests build
    /// the probing table for a small model with 0).
    fn with_direct_table_up_to(
        model: &ModelFile,
        direct_max_bits: u8,
    ) -> Result<Self, ClassifierError> {
        model.check().map_err(ClassifierError::InvalidModel)?;
        let featurizer =
            Featurizer::new(model.features.clone()).map_err(ClassifierError::InvalidModel)?;
        let labels: Vec<Label> = model
            .labels
            .iter()
            .map(|l| {
                l.parse().map_err(|e: crate::labels::UnknownLabel| {
                    ClassifierError::InvalidModel(e.to_string())
                })
            })
            .collect::<Result<_, _>>()?;
        let k = labels.len();
        let mut weights = vec![[0f32; STRIDE]; model.buckets.len()];
        for (row, chunk) in weights.iter_mut().zip(model.weights.chunks_exact(k)) {
            row[..k].copy_from_slice(chunk);
        }
        let (mut slots, mut slot_mask, mut direct) = (Vec::new(), 0, Vec::new());
        if model.features.hash_bits <= direct_max_bits {
            direct = vec![EMPTY; 1 << model.features.hash_bits];
            for (row, &b) in model.buckets.iter().enumerate() {
                // `check` has refused buckets outside the hash space.
                direct[b as usize] = row as u32;
            }
        } else {
            let capacity = (model.buckets.len() * 4).next_power_of_two().max(16);
            slot_mask = (capacity - 1) as u32;
            slots = vec![(EMPTY, 0u32); capacity];
            for (row, &b) in model.buckets.iter().enumerate() {
                let mut i = Self::home(b, slot_mask);
                while slots[i].0 != EMPTY {
                    i = (i + 1) & slot_mask as usize;
                }
                slots[i] = (b, row as u32);
            }
        }
        let mut intercept = [0f32; STRIDE];
        intercept[..k].copy_from_slice(&model.intercept);
        Ok(Scorer {
            featurizer,
            labels,
            slots,
            slot_mask,
            direct,
            weights,
            intercept,
            inverse_temperature: 1.0 / model.temperature,
            id: NEXT_SCORER_ID.fetch_add(1, Ordering::Relaxed),
            live: std::array::from_fn(|i| if i < k { 1.0 } else { 0.0 }),
        })
    }

    /// Loads a model file and builds its scorer.
    pub fn load(path: &Path) -> Result<Self, ClassifierError> {
        Self::new(&ModelFile::load(path)?)
    }

    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    pub fn featurizer(&self) -> &Featurizer {
        &self.featurizer
    }

    #[inline(always)]
    fn home(bucket: u32, mask: u32) -> usize {
        // Buckets are already uniformly spread hash bits; a multiply breaks up any stride.
        (bucket.wrapping_mul(0x9E37_79B1) >> 7 & mask) as usize
    }

    #[inline(always)]
    fn row_of(&self, b: u32) -> Option<usize> {
        if !self.direct.is_empty() {
            return match self.direct.get(b as usize) {
                Some(&row) if row != EMPTY => Some(row as usize),
                _ => None,
            };
        }
        let mut i = Self::home(b, self.slot_mask);
        loop {
            let (key, row) = self.slots[i];
            if key == b {
                return Some(row as usize);
            }
            if key == EMPTY {
                return None;
            }
            i = (i + 1) & self.slot_mask as usize;
        }
    }

    /// With the probing table, every feature probes a table larger than L1: asking for all
    /// their slots first lets the probes that follow wait on the cache together, not one by
    /// one. The direct table needs no such help.
    #[inline(always)]
    fn prefetch_slots(&self, features: &[u32]) {
        if !self.direct.is_empty() {
            // The direct table is small enough to stay in cache.
            return;
        }
        for &f in features {
            prefetch(&self.slots[Self::home(bucket(f), self.slot_mask)]);
        }
    }

    /// Finds the weight rows of `features`, tagging negative ones in the top bit, and asks the
    /// CPU to start fetching each row: the rows are scattered over a table larger than L2, so
    /// fetching them all at once before summing hides most of the memory latency.
    #[inline(always)]
    fn gather_rows(&self, features: &[u32], rows: &mut Vec<u32>) {
        for &f in features {
            if let Some(row) = self.row_of(bucket(f)) {
                prefetch(self.weights[row].as_ptr());
                rows.push(row as u32 | (f & SIGN));
            }
        }
    }

    /// Adds (or, for negative ones, subtracts) the gathered weight rows into `acc`.
    #[inline(always)]
    fn add_rows(&self, rows: &[u32], acc: &mut [f32; STRIDE]) {
        for &r in rows {
            let w = &self.weights[(r & !SIGN) as usize];
            if r & SIGN != 0 {
                acc.iter_mut().zip(w).for_each(|(a, w)| *a -= w);
            } else {
                acc.iter_mut().zip(w).for_each(|(a, w)| *a += w);
            }
        }
    }

    /// The logits of one movement, text features summed word by word through the workspace's
    /// word memory (see the module documentation): the same sum as [`Scorer::logits_of`], in
    /// a different order, so equal to it up to float rounding, and equal to itself whatever
    /// the workspace remembered before.
    fn logits_remembering(&self, input: &MovementInput<'_>, ws: &mut Workspace) -> [f32; STRIDE] {
        if ws.words_of != self.id {
            ws.words.clear();
            ws.words.resize(WORD_SLOTS, FREE_SLOT);
            ws.words_of = self.id;
            (ws.lookups, ws.misses) = (0, 0);
        }
        if ws.lookups >= GROWTH_WINDOW {
            if ws.misses > ws.lookups / 4 && ws.words.len() < MAX_WORD_SLOTS {
                // Slots move with the length: start again, twice as large (it refills in a
                // few hundred movements).
                let len = ws.words.len() * 2;
                ws.words.clear();
                ws.words.resize(len, FREE_SLOT);
            }
            (ws.lookups, ws.misses) = (0, 0);
        }
        self.featurizer.prepare(input, &mut ws.features);
        let Features {
            text: scratch,
            other,
            padded,
            ..
        } = &mut ws.features;
        let rows = &mut ws.rows;
        let words = &mut ws.words;
        let slot_mask = words.len() - 1;
        let (lookups, misses) = (&mut ws.lookups, &mut ws.misses);
        let mut acc = [0f32; STRIDE];
        let mut count = 0usize;
        self.featurizer.walk_words(padded, |piece| match piece {
            Piece::Word { start, end, hash } => {
                let len = end - start;
                let key = word_key(padded, start, len);
                // Bit 0 of a hash is a feature's sign; the bits above it index the slots.
                let slot = &mut words[(hash >> 1) as usize & slot_mask];
                *lookups += 1;
                if usize::from(slot.len) == len && slot.key == key {
                    add(&mut acc, &slot.sum);
                    count += slot.features as usize;
                    return;
                }
                *misses += 1;
                scratch.clear();
                self.featurizer
                    .word_features(padded, start, end, hash, scratch);
                rows.clear();
                self.prefetch_slots(scratch);
                self.gather_rows(scratch, rows);
                let mut sum = [0f32; STRIDE];
                self.add_rows(rows, &mut sum);
                add(&mut acc, &sum);
                count += scratch.len();
                if len <= REMEMBERED_WORD {
                    slot.key = key;
                    slot.len = len as u8;
                    slot.features = scratch.len() as u32;
                    slot.sum = sum;
                }
            }
            Piece::Bigram(f) => {
                count += 1;
                self.add_feature(f, &mut acc);
            }
        });
        let scale = text_scale(count);
        acc.iter_mut().for_each(|l| *l *= scale);
        for &f in other.iter() {
            self.add_feature(f, &mut acc);
        }
        add(&mut acc, &self.intercept);
        acc
    }

    /// Adds the signed weight row of one feature to `acc`, if the model kept its bucket.
    #[inline(always)]
    fn add_feature(&self, f: HashedFeature, acc: &mut [f32; STRIDE]) {
        if let Some(row) = self.row_of(bucket(f)) {
            self.add_rows(&[row as u32 | (f & SIGN)], acc);
        }
    }

    /// Computes the logits (`x · W + b`) of features already extracted, into `logits`.
    pub fn logits_of(&self, features: &Features, logits: &mut Vec<f32>) {
        let acc = self.logits_with(features, &mut Vec::new());
        logits.clear();
        logits.extend_from_slice(&acc[..self.labels.len()]);
    }

    /// The logits in a padded array (entries past the label count are meaningless); `rows` is
    /// scratch space.
    fn logits_with(&self, features: &Features, rows: &mut Vec<u32>) -> [f32; STRIDE] {
        rows.clear();
        self.prefetch_slots(&features.text);
        self.prefetch_slots(&features.other);
        self.gather_rows(&features.text, rows);
        let text_rows = rows.len();
        self.gather_rows(&features.other, rows);
        // A local array, not a Vec: the compiler keeps it in SIMD registers.
        let mut acc = [0f32; STRIDE];
        self.add_rows(&rows[..text_rows], &mut acc);
        let scale = features.text_scale;
        acc.iter_mut().for_each(|l| *l *= scale);
        self.add_rows(&rows[text_rows..], &mut acc);
        add(&mut acc, &self.intercept);
        acc
    }

    /// Class probabilities of one movement, in the order of [`Scorer::labels`].
    pub fn probabilities(&self, input: &MovementInput<'_>, ws: &mut Workspace) -> Vec<f32> {
        let mut acc = self.logits_remembering(input, ws);
        self.softmax(&mut acc, 1.0);
        acc[..self.labels.len()].to_vec()
    }

    /// Turns padded logits, multiplied by `scale`, into probabilities: the label lanes sum to
    /// one and the padding lanes become 0. All [`STRIDE`] lanes go through the same
    /// branch-free steps, so the compiler runs them as SIMD vectors.
    #[inline(always)]
    fn softmax(&self, acc: &mut [f32; STRIDE], scale: f32) {
        // Padding lanes are 0 (rows and intercept are padded with zeros); their exponential is
        // multiplied by 0 below, so they never count.
        acc.iter_mut().for_each(|a| *a *= scale);
        let mut max = f32::MIN;
        for &a in &acc[..self.labels.len()] {
            max = if a > max { a } else { max };
        }
        for (a, live) in acc.iter_mut().zip(&self.live) {
            *a = exp_non_positive(*a - max) * live;
        }
        // Summed lane-wise, eight at a time, then across: a fixed order the compiler can keep
        // in vectors (a running scalar sum would force one lane at a time).
        let mut lanes = [0f32; 8];
        for chunk in acc.chunks_exact(8) {
            lanes.iter_mut().zip(chunk).for_each(|(l, a)| *l += a);
        }
        let inv = 1.0 / lanes.iter().sum::<f32>();
        acc.iter_mut().for_each(|a| *a *= inv);
    }

    /// Predicts one movement, reusing `ws` between calls.
    pub fn predict_with(&self, input: &MovementInput<'_>, ws: &mut Workspace) -> Prediction {
        let mut acc = self.logits_remembering(input, ws);
        self.softmax(&mut acc, self.inverse_temperature);
        self.top3(&acc[..self.labels.len()])
    }

    /// Predicts one movement.
    pub fn predict(&self, input: &MovementInput<'_>) -> Prediction {
        self.predict_with(input, &mut Workspace::default())
    }

    /// Predicts a batch, in order.
    pub fn predict_batch(&self, inputs: &[MovementInput<'_>]) -> Vec<Prediction> {
        let mut ws = Workspace::default();
        inputs
            .iter()
            .map(|m| self.predict_with(m, &mut ws))
            .collect()
    }

    fn top3(&self, probs: &[f32]) -> Prediction {
        let mut best = [(usize::MAX, f32::NEG_INFINITY); 3];
        for (i, &p) in probs.iter().enumerate() {
            if p > best[0].1 {
                best = [(i, p), best[0], best[1]];
            } else if p > best[1].1 {
                best = [best[0], (i, p), best[1]];
            } else if p > best[2].1 {
                best[2] = (i, p);
            }
        }
        // NaN cannot arise from finite weights, but a prediction must exist whatever happens.
        let (top, p) = if best[0].0 == usize::MAX {
            (0, 0.0)
        } else {
            best[0]
        };
        let alt = |(i, p): (usize, f32)| {
            (i != usize::MAX).then(|| Alternative {
                label: self.labels[i],
                probability: p,
            })
        };
        Prediction {
            label: self.labels[top],
            probability: p,
            confidence: Confidence::from_probability(p),
            runners_up: [alt(best[1]), alt(best[2])],
        }
    }
}

/// `BYTE_MASKS[n]` keeps the low `n` bytes of a little-endian word.
const BYTE_MASKS: [u64; 9] = {
    let mut masks = [u64::MAX; 9];
    let mut n = 0;
    while n < 8 {
        masks[n] = (1u64 << (8 * n)) - 1;
        n += 1;
    }
    masks
};

/// The first [`REMEMBERED_WORD`] bytes of the word `padded[start..start + len]` as three
/// little-endian words, zero past its end; [`crate::features::PAD`] zero bytes end every padded description, so
/// the loads never run out of it.
#[inline(always)]
fn word_key(padded: &[u8], start: usize, len: usize) -> [u64; 3] {
    let mut key = [0u64; 3];
    for (i, k) in key.iter_mut().enumerate() {
        let at = start + 8 * i;
        let w = u64::from_le_bytes(padded[at..at + 8].try_into().expect("8 bytes"));
        *k = w & BYTE_MASKS[len.saturating_sub(8 * i).min(8)];
    }
    key
}

/// `acc += w`, element by element.
#[inline(always)]
fn add(acc: &mut [f32; STRIDE], w: &[f32; STRIDE]) {
    acc.iter_mut().zip(w).for_each(|(a, w)| *a += w);
}

/// e^x for x ≤ 0 (what a softmax needs once the maximum is taken off), within 2 ulp of libm's
/// `expf`; below -87 it gives e^-87 (about 1.6e-38) instead of smaller values, and above 0
/// it gives 1. Plain
/// arithmetic, so a loop of them becomes SIMD. Range reduction and polynomial after Cephes'
/// `expf`: x = n·ln 2 + r with |r| ≤ ln 2 / 2, e^x = 2^n · p(r).
#[inline(always)]
fn exp_non_positive(x: f32) -> f32 {
    // Adding then subtracting 1.5 × 2^23 rounds to the nearest integer without SSE4.1.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Clamped both ways so any input gives a finite result: a padding lane of the softmax
    // can be above the maximum (0 against all-negative logits), and its result is then
    // multiplied by 0, which must not meet an infinity.
    let x = x.clamp(-87.0, 0.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e = p * r * r + r + 1.0;
    // n is a whole number in -126..=0 and `t` is ROUND + n exactly (its ulp is 1), so the
    // difference of their bits is n: 2^n is the normal float of exponent n + 127. Integer
    // arithmetic on the bits, not a float-to-int cast, keeps this in vectors.
    let n_bits = t.to_bits().wrapping_sub(ROUND.to_bits());
    e * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// Softmax of `v`, stable for any finite logits.
pub fn softmax_in_place(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    v.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::is_negative;

    /// A hand-made model: the word "pizza" votes FOOD_AND_DRINK, money in votes INCOME.
    fn tiny_model() -> ModelFile {
        let f = Featurizer::new(FeatureSettings::default()).unwrap();
        let mut feats = Features::default();
        f.featurize(
            &MovementInput {
                description: "pizza",
                amount: 10.0,
                mcc: None,
                kind: None,
            },
            &mut feats,
        );
        let word = *feats.text.last().unwrap();
        let money_in = feats.other[0];
        let sign = |f: u32| if is_negative(f) { -1.0 } else { 1.0 };
        ModelFile {
            format: MODEL_FORMAT.into(),
            features: FeatureSettings::default(),
            labels: vec!["FOOD_AND_DRINK".into(), "INCOME".into(), "BANK_FEES".into()],
            buckets: vec![bucket(word), bucket(money_in)],
            weights: vec![8.0 * sign(word), 0.0, 0.0, 0.0, 2.0 * sign(money_in), 0.0],
            intercept: vec![0.0, 0.0, 0.5],
            temperature: 1.0,
            training: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_temperature_changes_probabilities_but_never_the_label() {
        let input = MovementInput {
            description: "PIZZA",
            amount: -30.0,
            mcc: None,
            kind: None,
        };
        let raw = Scorer::new(&tiny_model()).unwrap().predict(&input);
        let hot = Scorer::new(&ModelFile {
            temperature: 4.0,
            ..tiny_model()
        })
        .unwrap()
        .predict(&input);
        let cold = Scorer::new(&ModelFile {
            temperature: 0.25,
            ..tiny_model()
        })
        .unwrap()
        .predict(&input);
        assert_eq!(raw.label, hot.label);
        assert_eq!(raw.label, cold.label);
        assert!(hot.probability < raw.probability && raw.probability < cold.probability);
    }

    #[test]
    fn a_temperature_out_of_range_is_refused() {
        for t in [0.0, -1.0, f32::NAN, 1000.0] {
            let model = ModelFile {
                temperature: t,
                ..tiny_model()
            };
            let err = model.check().unwrap_err();
            assert!(err.contains("temperature"), "{err}");
        }
    }

    #[test]
    fn active_feature_weights_decide_the_label_and_probabilities_sum_to_one() {
        for direct_max_bits in [0, 24] {
            active_feature_weights_decide_with(
                &Scorer::with_direct_table_up_to(&tiny_model(), direct_max_bits).unwrap(),
            );
        }
    }

    /// Both bucket tables: the tiny model leaves most buckets without a row.
    fn active_feature_weights_decide_with(scorer: &Scorer) {
        let p = scorer.predict(&MovementInput {
            description: "PIZZA",
            amount: -30.0,
            mcc: None,
            kind: None,
        });
        assert_eq!(p.label, Label::FoodAndDrink);
        let p = scorer.predict(&MovementInput {
            description: "TED",
            amount: 900.0,
            mcc: None,
            kind: None,
        });
        assert_eq!(p.label, Label::Income);
        assert_eq!(p.runners_up[0].unwrap().label, Label::BankFees);
        let mut ws = Workspace::default();
        let probs = scorer.probabilities(
            &MovementInput {
                description: "x",
                amount: 1.0,
                mcc: None,
                kind: None,
            },
            &mut ws,
        );
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    fn shipped_scorer() -> Scorer {
        Scorer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.json")).unwrap()
    }

    /// Descriptions that repeat words, share a word slot, run past what is remembered, or hold
    /// no word at all.
    fn varied_descriptions() -> Vec<String> {
        let mut d: Vec<String> = [
            "COMPRA CARTAO PADARIA REAL SAO PAULO",
            "PIX ENVIADO MARIA DA SILVA",
            "PIX RECEBIDO MARIA DA SILVA",
            "compra cartao posto ipiranga",
            "AUTO POSTO JR LTDA",
            "PAG*PadariaReal",
            "Pão de Açúcar São Paulo",
            "SUPERCALIFRAGILISTICEXPIALIDOCIOUSLY LONG MERCHANT NAME",
            "AUTO AUTO AUTO POSTO",
            "",
            "   ",
            "日本 ストア",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Three thousand distinct words in 1,024 slots: many share one, and the memory grows
        // on the second pass (more than a quarter of the look-ups miss).
        // (Letters only: normalising splits digits off a word.)
        let letters = |mut i: usize| {
            let mut s = String::new();
            loop {
                s.push(char::from(b'A' + (i % 26) as u8));
                i /= 26;
                if i == 0 {
                    return s;
                }
            }
        };
        d.extend((0..3000).map(|i| format!("LOJA{} CENTRO{}", letters(i), letters(i % 7))));
        d
    }

    #[test]
    fn a_remembered_word_scores_exactly_as_a_word_seen_for_the_first_time() {
        let scorer = shipped_scorer();
        let descriptions = varied_descriptions();
        fn input(d: &str) -> MovementInput<'_> {
            MovementInput {
                description: d,
                amount: -42.5,
                mcc: Some(5812),
                kind: Some("cartao"),
            }
        }
        let fresh: Vec<Vec<f32>> = descriptions
            .iter()
            .map(|d| scorer.probabilities(&input(d), &mut Workspace::default()))
            .collect();
        let mut ws = Workspace::default();
        for _ in 0..2 {
            for (d, expected) in descriptions.iter().zip(&fresh) {
                let remembered = scorer.probabilities(&input(d), &mut ws);
                assert_eq!(&remembered, expected, "{d:?}");
            }
        }
        assert!(ws.words.len() > WORD_SLOTS, "the memory grew");
        // And the word-by-word sum is the feature-by-feature sum, up to float rounding.
        let mut features = Features::default();
        let mut logits = Vec::new();
        for (d, expected) in descriptions.iter().zip(&fresh) {
            scorer.featurizer().featurize(&input(d), &mut features);
            scorer.logits_of(&features, &mut logits);
            softmax_in_place(&mut logits);
            for (a, b) in logits.iter().zip(expected) {
                assert!((a - b).abs() < 1e-5, "{d:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn the_direct_bucket_table_and_the_probing_one_score_bit_for_bit_alike() {
        let model =
            ModelFile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.json"))
                .unwrap();
        let direct = Scorer::with_direct_table_up_to(&model, 24).unwrap();
        let probing = Scorer::with_direct_table_up_to(&model, 0).unwrap();
        assert!(!direct.direct.is_empty() && direct.slots.is_empty());
        assert!(probing.direct.is_empty() && !probing.slots.is_empty());
        let (mut a, mut b) = (Workspace::default(), Workspace::default());
        for d in varied_descriptions() {
            let input = MovementInput {
                description: &d,
                amount: -42.5,
                mcc: Some(5812),
                kind: Some("pix"),
            };
            assert_eq!(
                direct.probabilities(&input, &mut a),
                probing.probabilities(&input, &mut b),
                "{d:?}"
            );
        }
    }

    #[test]
    fn a_workspace_shared_by_two_models_never_mixes_their_weights() {
        let food = Scorer::new(&tiny_model()).unwrap();
        let mut flipped = tiny_model();
        flipped.weights[0] = -flipped.weights[0];
        let flipped = Scorer::new(&flipped).unwrap();
        let pizza = MovementInput {
            description: "PIZZA",
            amount: -30.0,
            mcc: None,
            kind: None,
        };
        let mut ws = Workspace::default();
        assert_eq!(
            food.predict_with(&pizza, &mut ws).label,
            Label::FoodAndDrink
        );
        assert_eq!(
            flipped.predict_with(&pizza, &mut ws),
            flipped.predict(&pizza)
        );
        assert_ne!(
            flipped.predict_with(&pizza, &mut ws).label,
            Label::FoodAndDrink
        );
    }

    #[test]
    fn the_softmax_exponential_stays_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        for i in 0..=870_000 {
            let x = -(i as f32) / 10_000.0;
            let (ours, libm) = (exp_non_positive(x), x.exp());
            worst = worst.max((ours - libm).abs() / libm);
        }
        assert!(worst <= 2.0 * f32::EPSILON, "worst relative error {worst}");
        assert_eq!(exp_non_positive(0.0), 1.0);
        assert!(exp_non_positive(-1000.0) > 0.0 && exp_non_positive(-1000.0) < 2e-38);
    }

    #[test]
    fn very_negative_logits_still_give_probabilities_that_sum_to_one() {
        let scorer = Scorer::new(&ModelFile {
            // The maximum, -88.6, leaves the padding lanes at +88.6, where e^x overflows f32.
            intercept: vec![-89.0, -89.0, -88.6],
            ..tiny_model()
        })
        .unwrap();
        let probs = scorer.probabilities(
            &MovementInput {
                description: "TED",
                amount: -1.0,
                mcc: None,
                kind: None,
            },
            &mut Workspace::default(),
        );
        assert!(probs.iter().all(|p| p.is_finite()), "{probs:?}");
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{probs:?}");
        assert!(probs[2] > probs[0] && probs[0] == probs[1], "{probs:?}");
    }

    #[test]
    fn an_inconsistent_model_is_refused_with_the_reason() {
        let mut m = tiny_model();
        m.weights.pop();
        assert!(Scorer::new(&m)
            .unwrap_err()
            .to_string()
            .contains("5 weights, expected 2 buckets × 3 labels"));
        let mut m = tiny_model();
        m.labels[1] = "SALARY".into();
        assert!(Scorer::new(&m)
            .unwrap_err()
            .to_string()
            .contains("`SALARY`"));
        let mut m = tiny_model();
        m.intercept[0] = f32::NAN;
        assert!(Scorer::new(&m).unwrap_err().to_string().contains("finite"));
    }

    #[test]
    fn missing_corrupt_and_foreign_model_files_get_clear_errors() {
        let dir = std::env::temp_dir().join(format!("clf-model-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = ModelFile::load(&dir.join("nope.json"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.json"), "{missing}");
        let corrupt = dir.join("corrupt.json");
        std::fs::write(&corrupt, b"{\"format\": \"credit-classifier/1\", \"labe").unwrap();
        assert!(ModelFile::load(&corrupt)
            .unwrap_err()
            .to_string()
            .contains("not valid JSON"));
        let foreign = dir.join("foreign.json");
        std::fs::write(&foreign, b"{\"format\": \"credit-classifier/0\"}").unwrap();
        assert!(ModelFile::load(&foreign)
            .unwrap_err()
            .to_string()
            .contains("`credit-classifier/0` is not supported"));
        let good = dir.join("good.json");
        tiny_model().save(&good).unwrap();
        assert_eq!(ModelFile::load(&good).unwrap(), tiny_model());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
