//! Namespaced, signed feature hashing of a bank movement.
//!
//! A movement becomes a short list of hashed features, each in its own namespace so that the
//! word `bar` and the character trigram `bar` never share a weight:
//!
//! | namespace | what | value |
//! |---|---|---|
//! | char | character n-grams inside each word, padded with a space at both ends | ±1/√(text features) |
//! | word | word unigrams | same |
//! | bigram | adjacent word pairs | same |
//! | direction | money in, out, or zero | ±1 |
//! | amount | direction and log2 bucket of the amount | ±1 |
//! | round | the amount is a whole multiple of 10 (transfers, rent) | ±1 |
//! | mcc, mcc group | the merchant category code and its first two digits | ±1 |
//! | type | the bureau's movement type (`pix`, `cartao`, ...) | ±1 |
//!
//! Each feature hashes to a bucket in `2^hash_bits` and a sign; the sign makes colliding
//! features cancel on average instead of adding up. Text features are scaled by one over the
//! square root of their count so a long description does not shout down a short one.
//!
//! [`FeatureSettings`] is stored in the model file: training and serving featurise alike.

use serde::{Deserialize, Serialize};

use crate::normalize::normalize_into;

/// How descriptions are normalised and featurised. Part of every model file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSettings {
    /// Buckets are `0..2^hash_bits`; at most 24 so a bucket fits the scorer's 32-bit keys.
    pub hash_bits: u8,
    /// Smallest character n-gram taken inside a word (the padding spaces count).
    pub char_ngram_min: u8,
    /// Largest character n-gram; at most 8 (n-grams are hashed as one 64-bit word).
    pub char_ngram_max: u8,
    /// Whether adjacent word pairs are features.
    pub word_bigrams: bool,
    /// Only this many bytes of a description are read.
    pub max_description_bytes: usize,
    /// Payment-processor prefixes (lower case, letters and digits only) dropped before `*`.
    pub processor_prefixes: Vec<String>,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        FeatureSettings {
            // 2^13 buckets, all of which training keeps as dense columns: every n-gram reaches
            // the model, sharing its bucket with others (the signs cancel them on average),
            // instead of a 2^20 space of which only 8,000 chosen buckets got weights. As good
            // or slightly better on held-out statement styles, with no column choice
            // (benches/README.md, `classifier_prototypes.sh`).
            hash_bits: 13,
            char_ngram_min: 3,
            char_ngram_max: 4,
            word_bigrams: true,
            max_description_bytes: 256,
            processor_prefixes: [
                "pag",
                "pg",
                "mp",
                "mpago",
                "mercpago",
                "mercadopago",
                "iz",
                "sq",
                "sumup",
                "paypal",
                "pp",
                "ebanx",
                "ec",
                "stn",
                "stone",
                "picpay",
                "pagseguro",
                "ps",
                "ton",
                "cielo",
                "getnet",
                "rede",
                "dlocal",
                "adyen",
                "zp",
                "sis",
                "pags",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

impl FeatureSettings {
    /// Checks the ranges the featuriser relies on; a model file with other values is refused.
    pub fn validate(&self) -> Result<(), String> {
        if !(8..=24).contains(&self.hash_bits) {
            return Err(format!("hash_bits is {}, expected 8 to 24", self.hash_bits));
        }
        if self.char_ngram_min < 1
            || self.char_ngram_max > 8
            || self.char_ngram_min > self.char_ngram_max
        {
            return Err(format!(
                "char n-gram range {}..={} is invalid, expected 1 <= min <= max <= 8",
                self.char_ngram_min, self.char_ngram_max
            ));
        }
        if self.max_description_bytes == 0 || self.max_description_bytes > 65_536 {
            return Err(format!(
                "max_description_bytes is {}, expected 1 to 65536",
                self.max_description_bytes
            ));
        }
        Ok(())
    }
}

/// What the featuriser reads of a movement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MovementInput<'a> {
    pub description: &'a str,
    /// Signed amount in BRL; negative is money leaving the account.
    pub amount: f64,
    /// Merchant category code, when the bureau sent one.
    pub mcc: Option<u16>,
    /// The bureau's movement type (`pix`, `cartao`, `tarifa`, ...), when present.
    pub kind: Option<&'a str>,
}

/// A hashed feature: bucket in the low 31 bits, sign in the top bit (set = negative).
pub type HashedFeature = u32;

const SIGN_BIT: u32 = 1 << 31;

/// The bucket of a hashed feature.
#[inline]
pub fn bucket(f: HashedFeature) -> u32 {
    f & !SIGN_BIT
}

/// Whether a hashed feature counts negatively.
#[inline]
pub fn is_negative(f: HashedFeature) -> bool {
    f & SIGN_BIT != 0
}

/// The features of one movement, in buffers reused from one movement to the next.
#[derive(Debug, Default, Clone)]
pub struct Features {
    /// Character n-grams, words and bigrams: each weighs `text_scale`.
    pub text: Vec<HashedFeature>,
    /// Direction, amount, MCC and type: each weighs 1.
    pub other: Vec<HashedFeature>,
    /// 1/√(text.len()), or 0 when there is no text.
    pub text_scale: f32,
    normalized: String,
    /// The normalised description as [`Featurizer::prepare`] pads it.
    pub(crate) padded: Vec<u8>,
}

/// Zero bytes after a padded description: see [`Featurizer::prepare`].
pub(crate) const PAD: usize = 24;

/// What the weight of `count` text features is: 1/√count, or 0 when there are none.
#[inline]
pub(crate) fn text_scale(count: usize) -> f32 {
    if count == 0 {
        0.0
    } else {
        1.0 / (count as f32).sqrt()
    }
}

/// ⌊log₂ x⌋ for a finite `x` ≥ 1, read off the float's exponent: exact, where `log2` may
/// round up just below a power of two, and without a libm call.
#[inline]
fn floor_log2(x: f64) -> i64 {
    ((x.to_bits() >> 52) & 0x7ff) as i64 - 1023
}

/// One step of [`Featurizer::walk_words`].
pub(crate) enum Piece {
    /// The word `padded[start..end]`, whose hash in the word namespace is `hash`.
    Word { start: usize, end: usize, hash: u64 },
    /// The bigram that the word just walked ends.
    Bigram(HashedFeature),
}

impl Features {
    /// Calls `f(bucket, value)` for every feature, with its sign and weight applied: what a
    /// dense row holds, a bucket's values adding up when features collide.
    pub fn for_each_value(&self, mut f: impl FnMut(u32, f32)) {
        let signed = |x: HashedFeature, v: f32| if is_negative(x) { -v } else { v };
        for &t in &self.text {
            f(bucket(t), signed(t, self.text_scale));
        }
        for &o in &self.other {
            f(bucket(o), signed(o, 1.0));
        }
    }

    /// The normalised description the text features came from.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }
}

#[derive(Clone, Copy)]
#[repr(u8)]
enum Ns {
    Char = 0,
    Word,
    Bigram,
    Direction,
    Amount,
    Round,
    Mcc,
    MccGroup,
    Kind,
}

/// Per-namespace seeds: arbitrary odd 64-bit constants. Changing one changes every model.
const SEEDS: [u64; 9] = [
    0x9e37_79b9_7f4a_7c15,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0x85eb_ca77_c2b2_ae63,
    0x27d4_eb2f_1656_67c5,
    0xd6e8_feb8_6659_fd93,
    0xa076_1d64_78bd_642f,
    0xe703_7ed1_a0b4_28db,
    0x8ebc_6af0_9c88_c6e3,
];
const K1: u64 = 0x589_65cc_75a0_9b5b;
const K2: u64 = 0x1d8e_4e27_c47d_124f;

#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

/// Hashes up to 8 bytes already packed little-endian into `word`.
#[inline(always)]
fn hash_word(ns: Ns, word: u64, len: usize) -> u64 {
    fold_mul(
        word ^ SEEDS[ns as usize],
        K1 ^ (len as u64).wrapping_mul(K2),
    )
}

/// Hashes any byte string, eight bytes at a time.
#[inline]
fn hash_bytes(ns: Ns, bytes: &[u8]) -> u64 {
    let mut h = SEEDS[ns as usize] ^ (bytes.len() as u64).wrapping_mul(K2);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("chunks_exact yields 8 bytes"));
        h = fold_mul(h ^ w, K1);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = 0u64;
        for (i, b) in rest.iter().enumerate() {
            w |= (*b as u64) << (8 * i);
        }
        h = fold_mul(h ^ w, K1);
    }
    fold_mul(h, K2)
}

/// Turns movements into hashed features according to a [`FeatureSettings`].
#[derive(Debug, Clone)]
pub struct Featurizer {
    settings: FeatureSettings,
    shift: u32,
    ngram_min: usize,
    ngram_max: usize,
}

impl Featurizer {
    /// Builds a featuriser; the settings must be valid (see [`FeatureSettings::validate`]).
    pub fn new(settings: FeatureSettings) -> Result<Self, String> {
        settings.validate()?;
        Ok(Featurizer {
            shift: 64 - settings.hash_bits as u32,
            ngram_min: settings.char_ngram_min as usize,
            ngram_max: settings.char_ngram_max as usize,
            settings,
        })
    }

    pub fn settings(&self) -> &FeatureSettings {
        &self.settings
    }

    #[inline(always)]
    fn feature(&self, h: u64) -> HashedFeature {
        ((h >> self.shift) as u32) | (((h & 1) as u32) << 31)
    }

    /// Fills `out` with the features of `input`, replacing what it held.
    pub fn featurize(&self, input: &MovementInput<'_>, out: &mut Features) {
        self.prepare(input, out);
        let Features { text, padded, .. } = out;
        text.clear();
        self.walk_words(padded, |piece| match piece {
            Piece::Word { start, end, hash } => self.word_features(padded, start, end, hash, text),
            Piece::Bigram(f) => text.push(f),
        });
        out.text_scale = text_scale(out.text.len());
    }

    /// The part of featurising that does not depend on how text features are consumed:
    /// normalises and pads the description into `out.padded`, and fills `out.other`.
    pub(crate) fn prepare(&self, input: &MovementInput<'_>, out: &mut Features) {
        normalize_into(
            input.description,
            &self.settings.processor_prefixes,
            self.settings.max_description_bytes,
            &mut out.normalized,
        );
        // " word word " followed by PAD zero bytes, so every n-gram loads as one u64 and every
        // remembered word as three.
        let padded = &mut out.padded;
        padded.clear();
        padded.push(b' ');
        padded.extend_from_slice(out.normalized.as_bytes());
        padded.push(b' ');
        padded.extend_from_slice(&[0u8; PAD]);
        out.other.clear();
        self.other_features(input, &mut out.other);
    }

    /// Walks the words of a description padded by [`Featurizer::prepare`], in order: each word,
    /// then (from the second word on, if the settings ask for them) the bigram it ends.
    #[inline(always)]
    pub(crate) fn walk_words(&self, padded: &[u8], mut f: impl FnMut(Piece)) {
        let text_end = padded.len() - PAD;
        let mut prev_start: Option<usize> = None;
        let mut start = 1;
        while start < text_end - 1 {
            let end = start
                + padded[start..text_end]
                    .iter()
                    .position(|&b| b == b' ')
                    .unwrap_or(text_end - start);
            f(Piece::Word {
                start,
                end,
                hash: hash_bytes(Ns::Word, &padded[start..end]),
            });
            if self.settings.word_bigrams {
                if let Some(ps) = prev_start {
                    f(Piece::Bigram(
                        self.feature(hash_bytes(Ns::Bigram, &padded[ps..end])),
                    ));
                }
            }
            prev_start = Some(start);
            start = end + 1;
        }
    }

    /// Appends the features of the word `padded[start..end]` (its character n-grams, then the
    /// word itself, whose hash [`Featurizer::walk_words`] gave) to `out`. They depend on the
    /// word alone, which is what lets a scorer remember a word's weights.
    #[inline(always)]
    pub(crate) fn word_features(
        &self,
        padded: &[u8],
        start: usize,
        end: usize,
        hash: u64,
        out: &mut Vec<HashedFeature>,
    ) {
        // The word with its padding is padded[start-1..=end].
        let lo = start - 1;
        let hi = end + 1;
        for n in self.ngram_min..=self.ngram_max {
            if hi - lo < n {
                break;
            }
            let mask = if n == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * n)) - 1
            };
            for i in lo..=hi - n {
                let w = u64::from_le_bytes(padded[i..i + 8].try_into().expect("8 bytes"));
                out.push(self.feature(hash_word(Ns::Char, w & mask, n)));
            }
        }
        out.push(self.feature(hash));
    }

    fn other_features(&self, input: &MovementInput<'_>, out: &mut Vec<HashedFeature>) {
        let amount = if input.amount.is_finite() {
            input.amount
        } else {
            0.0
        };
        let direction: u64 = if amount > 0.0 {
            1
        } else if amount < 0.0 {
            2
        } else {
            3
        };
        out.push(self.feature(hash_word(Ns::Direction, direction, 1)));
        // log2 buckets: R$ 0-1, 1-3, 3-7, ... up to 2^24; each direction has its own.
        let magnitude = amount.abs();
        let log_bucket = floor_log2(magnitude + 1.0).clamp(0, 24) as u64;
        out.push(self.feature(hash_word(Ns::Amount, direction | (log_bucket << 8), 2)));
        let cents = (magnitude * 100.0).round();
        // Whole cents below 2^53 are exact integers, and an integer remainder is far cheaper
        // than `fmod`; beyond that (no real amount) the float test stays.
        let round = if cents < 9.0e15 {
            cents as u64 % 1000 == 0
        } else {
            cents % 1000.0 == 0.0
        };
        if cents >= 1000.0 && round {
            out.push(self.feature(hash_word(Ns::Round, direction, 1)));
        }
        if let Some(mcc) = input.mcc {
            out.push(self.feature(hash_word(Ns::Mcc, mcc as u64, 2)));
            out.push(self.feature(hash_word(Ns::MccGroup, (mcc / 100) as u64, 2)));
        }
        if let Some(kind) = input.kind {
            let mut buf = [0u8; 32];
            let mut len = 0;
            // A type that starts and ends with a visible ASCII byte has nothing to trim: the
            // usual case, and `trim` (which knows all of Unicode's spaces) costs a call.
            let bytes = kind.as_bytes();
            let visible = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_graphic());
            let kind = if visible(bytes.first()) && visible(bytes.last()) {
                kind
            } else {
                kind.trim()
            };
            for b in kind.bytes().take(32) {
                buf[len] = b.to_ascii_lowercase();
                len += 1;
            }
            if len > 0 {
                out.push(self.feature(hash_bytes(Ns::Kind, &buf[..len])));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn featurizer() -> Featurizer {
        Featurizer::new(FeatureSettings::default()).unwrap()
    }

    fn input(description: &str) -> MovementInput<'_> {
        MovementInput {
            description,
            amount: -42.5,
            mcc: None,
            kind: None,
        }
    }

    fn features(f: &Featurizer, m: &MovementInput<'_>) -> Features {
        let mut out = Features::default();
        f.featurize(m, &mut out);
        out
    }

    #[test]
    fn char_ngrams_words_and_bigrams_are_counted_as_the_settings_say() {
        let f = featurizer();
        // " ab " has 2 trigrams and 1 four-gram; " cde " has 3 + 2; 2 words; 1 bigram.
        let out = features(&f, &input("AB cde"));
        assert_eq!(out.normalized(), "ab cde");
        assert_eq!(out.text.len(), (2 + 1) + (3 + 2) + 2 + 1);
        assert!((out.text_scale - 1.0 / (11f32).sqrt()).abs() < 1e-7);
    }

    #[test]
    fn hashing_is_deterministic_and_buckets_fit_the_hash_space() {
        let f = featurizer();
        let a = features(&f, &input("SUPERMERCADO ZONA SUL 0042"));
        let b = features(&f, &input("supermercado zona sul 0099"));
        assert_eq!(a.text, b.text, "same normalised text, same features");
        assert_eq!(a.other, b.other);
        assert!(a.text.iter().all(|&x| bucket(x) < (1 << 20)));
        // Both signs occur: the sign comes from the hash, not a constant.
        assert!(a.text.iter().any(|&x| is_negative(x)));
        assert!(a.text.iter().any(|&x| !is_negative(x)));
    }

    #[test]
    fn namespaces_keep_a_word_apart_from_the_same_ngram() {
        let f = featurizer();
        // "bar" is both a word and the trigram inside " bar ".
        let out = features(&f, &input("bar"));
        let word = *out.text.last().unwrap();
        let trigrams: Vec<_> = out.text[..out.text.len() - 1].to_vec();
        assert!(!trigrams.contains(&word));
    }

    #[test]
    fn direction_amount_mcc_and_type_add_features() {
        let f = featurizer();
        let plain = features(&f, &input("x"));
        assert_eq!(plain.other.len(), 2, "direction and amount bucket");
        let full = features(
            &f,
            &MovementInput {
                description: "x",
                amount: 1500.0,
                mcc: Some(5411),
                kind: Some("PIX"),
            },
        );
        assert_eq!(
            full.other.len(),
            2 + 1 + 2 + 1,
            "+ round, mcc, mcc group, type"
        );
        let lower = features(
            &f,
            &MovementInput {
                description: "x",
                amount: 1500.0,
                mcc: Some(5411),
                kind: Some("pix"),
            },
        );
        assert_eq!(full.other, lower.other, "type is case-insensitive");
        assert_ne!(
            plain.other[0], full.other[0],
            "money out and money in differ"
        );
    }

    #[test]
    fn empty_and_hostile_input_produce_no_text_and_no_panic() {
        let f = featurizer();
        let out = features(&f, &input(""));
        assert!(out.text.is_empty());
        assert_eq!(out.text_scale, 0.0);
        let weird = features(
            &f,
            &MovementInput {
                description: &"\u{0}*\u{feff}💳".repeat(10_000),
                amount: f64::NAN,
                mcc: Some(u16::MAX),
                kind: Some(""),
            },
        );
        assert!(
            weird.text.len() < 2_000,
            "input is cut at max_description_bytes"
        );
    }

    #[test]
    fn invalid_settings_are_refused_with_the_reason() {
        let s = FeatureSettings {
            char_ngram_max: 9,
            ..FeatureSettings::default()
        };
        assert!(Featurizer::new(s).unwrap_err().contains("n-gram"));
        let s = FeatureSettings {
            hash_bits: 30,
            ..FeatureSettings::default()
        };
        assert!(Featurizer::new(s).unwrap_err().contains("hash_bits"));
    }
}
