//! Normalisation of statement descriptions before featurisation.
//!
//! Bank statements print the same merchant many ways: `PAG*PadariaReal`, `PADARIA REAL 0042`,
//! `Padaria Real São Paulo`. Normalisation folds those differences away so the features see the
//! merchant: it lower-cases, strips accents, turns punctuation into word breaks, replaces long
//! digit runs (store numbers, dates, card numbers) by a single `0`, and drops payment-processor
//! prefixes (`PAG*`, `MP *`, `PAYPAL *`, ...), which say who moved the money, not who was paid.
//!
//! The hot path works on bytes and allocates nothing: the caller owns the output buffer.

/// Digit runs at least this long are replaced by a single `0`; shorter ones ("99", "24",
/// instalment numbers such as "02 10") carry meaning and are kept.
pub const LONG_DIGIT_RUN: usize = 3;

/// Appends the normalised form of `text` to `out` (which is cleared first): lower-case ASCII
/// words separated by single spaces. At most `max_bytes` bytes of `text` are read, cut at a
/// character boundary, so a 10 KB description costs no more than a short one.
pub fn normalize_into(text: &str, prefixes: &[String], max_bytes: usize, out: &mut String) {
    out.clear();
    let text = truncate_at_char_boundary(text, max_bytes);
    let text = strip_processor_prefixes(text, prefixes);
    if text.is_ascii() {
        normalize_ascii(text.as_bytes(), out);
        return;
    }
    let mut pending_space = false;
    let mut digit_run = 0usize;
    // Where the current digit run starts in `out`, to collapse it once it grows long.
    let mut run_start = 0usize;
    for ch in text.chars() {
        if ch.is_ascii_digit() {
            if digit_run == 0 {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                run_start = out.len();
            }
            digit_run += 1;
            if digit_run < LONG_DIGIT_RUN {
                out.push(ch);
            } else if digit_run == LONG_DIGIT_RUN {
                out.truncate(run_start);
                out.push('0');
            }
            continue;
        }
        if digit_run > 0 {
            digit_run = 0;
            // Digits followed by letters ("24h", "4u") stay one word.
        }
        match fold(ch) {
            Folded::Skip => {}
            Folded::Break => pending_space = true,
            Folded::Ascii(c) => {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                out.push(c);
            }
            Folded::Other(c) => {
                if pending_space && !out.is_empty() {
                    out.push(' ');
                }
                pending_space = false;
                out.extend(c.to_lowercase());
            }
        }
    }
}

/// Convenience wrapper returning a new string; the hot path uses [`normalize_into`].
pub fn normalize(text: &str, prefixes: &[String], max_bytes: usize) -> String {
    let mut out = String::new();
    normalize_into(text, prefixes, max_bytes, &mut out);
    out
}

/// What the ASCII fast path does with each byte: `BREAK`, `SKIP`, or the byte to write.
const BREAK: u8 = 0;
const SKIP: u8 = 1;
const ASCII_CLASS: [u8; 128] = {
    let mut table = [BREAK; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        table[b] = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else if c.is_ascii_uppercase() {
            c.to_ascii_lowercase()
        } else if c == b'\'' {
            SKIP
        } else {
            BREAK
        };
        b += 1;
    }
    table
};

/// The same rules as the general path, a table look-up per byte, for the common all-ASCII
/// description.
fn normalize_ascii(text: &[u8], out: &mut String) {
    let mut buf = std::mem::take(out).into_bytes();
    buf.clear();
    let mut pending_space = false;
    let mut digit_run = 0usize;
    let mut run_start = 0usize;
    for &b in text {
        let c = ASCII_CLASS[(b & 0x7f) as usize];
        match c {
            BREAK => {
                digit_run = 0;
                pending_space = true;
            }
            SKIP => digit_run = 0,
            _ => {
                if c.is_ascii_digit() {
                    if digit_run == 0 {
                        if pending_space && !buf.is_empty() {
                            buf.push(b' ');
                        }
                        pending_space = false;
                        run_start = buf.len();
                    }
                    digit_run += 1;
                    if digit_run < LONG_DIGIT_RUN {
                        buf.push(c);
                    } else if digit_run == LONG_DIGIT_RUN {
                        buf.truncate(run_start);
                        buf.push(b'0');
                    }
                } else {
                    digit_run = 0;
                    if pending_space && !buf.is_empty() {
                        buf.push(b' ');
                    }
                    pending_space = false;
                    buf.push(c);
                }
            }
        }
    }
    // SAFETY: `buf` was cleared above and every byte pushed since is an ASCII letter, digit,
    // space or `0` from `ASCII_CLASS` (whose other entries, BREAK and SKIP, are never
    // pushed), so it is valid UTF-8. Checking it again cost 2% of a prediction.
    *out = unsafe { String::from_utf8_unchecked(buf) };
}

fn truncate_at_char_boundary(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Drops leading `PREFIX*` parts whose prefix (letters only, any case) is a known payment
/// processor. At most two are dropped (`PAG*MP*LOJA` happens); the merchant always stays.
fn strip_processor_prefixes<'a>(mut text: &'a str, prefixes: &[String]) -> &'a str {
    for _ in 0..2 {
        // Processor prefixes are short; a star far into the text is part of the merchant.
        // (A bounded scan: `str::find` sets up a memchr that costs more than these bytes.)
        let head = &text.as_bytes()[..text.len().min(17)];
        let Some(star) = head.iter().position(|&b| b == b'*') else {
            break;
        };
        let head = &text[..star];
        let key: String = head
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let rest = &text[star + 1..];
        if !key.is_empty() && prefixes.contains(&key) && !rest.trim().is_empty() {
            text = rest;
        } else {
            break;
        }
    }
    text
}

enum Folded {
    /// Dropped without breaking the word (apostrophes: `McDonald's` is one word).
    Skip,
    /// A word break.
    Break,
    Ascii(char),
    /// A letter outside Latin (kept, lower-cased, so non-Latin brands still have features).
    Other(char),
}

fn fold(ch: char) -> Folded {
    if ch.is_ascii() {
        return match ch {
            'a'..='z' => Folded::Ascii(ch),
            'A'..='Z' => Folded::Ascii(ch.to_ascii_lowercase()),
            '\'' => Folded::Skip,
            _ => Folded::Break,
        };
    }
    if ch == '\u{2019}' || ch == '\u{2018}' {
        return Folded::Skip;
    }
    if let Some(c) = fold_latin(ch) {
        return Folded::Ascii(c);
    }
    // Anything else with a canonical decomposition onto an ASCII letter (ŝ, ǎ, ...).
    let mut base = None;
    unicode_normalization::char::decompose_canonical(ch, |c| {
        if base.is_none() {
            base = Some(c);
        }
    });
    match base {
        Some(c) if c.is_ascii_alphabetic() => Folded::Ascii(c.to_ascii_lowercase()),
        _ if ch.is_alphanumeric() => Folded::Other(ch),
        _ => Folded::Break,
    }
}

/// The accented letters of Portuguese, Spanish, French and German, folded without a table
/// look-up; they are almost all the non-ASCII letters statements carry.
pub(crate) fn fold_latin(ch: char) -> Option<char> {
    Some(match ch {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'ª' => {
            'a'
        }
        'ç' | 'Ç' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'È' | 'É' | 'Ê' | 'Ë' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'Ì' | 'Í' | 'Î' | 'Ï' => 'i',
        'ñ' | 'Ñ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'º' => {
            'o'
        }
        'ù' | 'ú' | 'û' | 'ü' | 'Ù' | 'Ú' | 'Û' | 'Ü' => 'u',
        'ý' | 'ÿ' | 'Ý' => 'y',
        'ß' => 's',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes() -> Vec<String> {
        ["pag", "mp", "paypal", "iz"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn n(text: &str) -> String {
        normalize(text, &prefixes(), 256)
    }

    #[test]
    fn case_accents_and_punctuation_are_folded() {
        assert_eq!(n("Padaria São João - Centro"), "padaria sao joao centro");
        assert_eq!(n("AÇOUGUE  BOI-GORDO!!"), "acougue boi gordo");
        assert_eq!(n("McDonald's"), "mcdonalds");
        assert_eq!(n("NETFLIX.COM"), "netflix com");
        assert_eq!(n("  "), "");
    }

    #[test]
    fn long_digit_runs_collapse_and_short_ones_stay() {
        assert_eq!(n("LOJA 00421 SAO PAULO"), "loja 0 sao paulo");
        assert_eq!(n("COMPRA 12/03 PARC 02/10"), "compra 12 03 parc 02 10");
        assert_eq!(n("99APP *99RIDE"), "99app 99ride");
        assert_eq!(n("CARD 4111111111111111"), "card 0");
        assert_eq!(n("SHELL1234"), "shell0");
    }

    #[test]
    fn processor_prefixes_are_dropped_but_the_merchant_stays() {
        assert_eq!(n("PAG*PadariaReal"), "padariareal");
        assert_eq!(n("MP *LOJA DO ZE"), "loja do ze");
        assert_eq!(n("PAYPAL *STEAM GAMES"), "steam games");
        assert_eq!(n("PAG*MP*LOJA"), "loja");
        // Not a processor: the part before the star is the merchant.
        assert_eq!(n("IFOOD *IFOOD"), "ifood ifood");
        // A prefix with nothing after it is not stripped.
        assert_eq!(n("PAG*"), "pag");
    }

    #[test]
    fn the_ascii_fast_path_agrees_with_the_general_path() {
        // A trailing no-break space forces the general path and adds only a word break.
        for s in [
            "PAG*PadariaReal 0042",
            "McDonald's #12345 SAO PAULO BR",
            "99APP *99POP 12/03",
            "UBER   *TRIP-HELP.UBER.COM",
            "a1b22c333d4444",
            "'x' 000 '",
            "",
        ] {
            assert_eq!(n(s), n(&format!("{s}\u{a0}")), "{s:?}");
        }
    }

    #[test]
    fn non_latin_letters_are_kept_and_long_text_is_cut_at_a_char_boundary() {
        assert_eq!(n("すき家 Sukiya"), "すき家 sukiya");
        let long = "ã".repeat(5000);
        let out = normalize(&long, &prefixes(), 255);
        assert_eq!(out.len(), 127);
    }
}
