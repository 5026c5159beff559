//! The CPF, Brazil's individual taxpayer number, as a validated type.
//!
//! A [`Cpf`] can only be built by [`Cpf::parse`], which checks the two check digits, so code
//! that holds one never needs to check again. Its `Debug` and `Display` print the masked form
//! (`***.456.789-**`): a CPF is personal data and must not reach logs by accident. The digits
//! are available only through [`Cpf::digits`], for the partner request that needs them.

use std::fmt;

/// A CPF whose check digits are valid.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Cpf([u8; 11]);

/// Why a string is not a CPF. The messages never repeat the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpfError {
    #[error("a CPF has 11 digits; this has {0}")]
    Length(usize),
    #[error("a CPF holds only digits, optionally punctuated as 123.456.789-09")]
    Character,
    #[error("the CPF's check digits do not match")]
    CheckDigits,
    #[error("a CPF of one repeated digit is not valid")]
    Repeated,
}

impl Cpf {
    /// Parses `123.456.789-09` or `12345678909`; spaces, dots and dashes are ignored.
    pub fn parse(input: &str) -> Result<Self, CpfError> {
        let mut digits = [0u8; 11];
        let mut n = 0;
        for c in input.chars() {
            match c {
                '0'..='9' => {
                    if n < 11 {
                        digits[n] = c as u8 - b'0';
                    }
                    n += 1;
                }
                '.' | '-' | ' ' => {}
                _ => return Err(CpfError::Character),
            }
        }
        if n != 11 {
            return Err(CpfError::Length(n));
        }
        if digits.iter().all(|&d| d == digits[0]) {
            return Err(CpfError::Repeated);
        }
        if check_digit(&digits[..9]) != digits[9] || check_digit(&digits[..10]) != digits[10] {
            return Err(CpfError::CheckDigits);
        }
        Ok(Cpf(digits))
    }

    /// Builds a valid CPF from its first nine digits (the simulator and tests use this).
    pub fn from_base(base: u32) -> Self {
        let mut digits = [0u8; 11];
        let mut b = base % 1_000_000_000;
        for i in (0..9).rev() {
            digits[i] = (b % 10) as u8;
            b /= 10;
        }
        if digits[..9].iter().all(|&d| d == digits[0]) {
            digits[8] = (digits[8] + 1) % 10;
        }
        digits[9] = check_digit(&digits[..9]);
        digits[10] = check_digit(&digits[..10]);
        Cpf(digits)
    }

    /// The 11 digits, for the partner request path. Never log this.
    pub fn digits(&self) -> String {
        self.0.iter().map(|d| char::from(b'0' + d)).collect()
    }

    /// `***.456.789-**`: enough for a person to recognise, not enough to identify.
    pub fn masked(&self) -> String {
        let d = |i: usize| char::from(b'0' + self.0[i]);
        format!("***.{}{}{}.{}{}{}-**", d(3), d(4), d(5), d(6), d(7), d(8))
    }
}

fn check_digit(digits: &[u8]) -> u8 {
    let weight_start = digits.len() as u32 + 1;
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, &d)| d as u32 * (weight_start - i as u32))
        .sum();
    let r = (sum * 10) % 11;
    if r == 10 {
        0
    } else {
        r as u8
    }
}

impl fmt::Debug for Cpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cpf({})", self.masked())
    }
}

impl fmt::Display for Cpf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_cpfs_parse_with_or_without_punctuation() {
        let a = Cpf::parse("529.982.247-25").unwrap();
        let b = Cpf::parse("52998224725").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digits(), "52998224725");
    }

    #[test]
    fn invalid_cpfs_are_rejected_with_the_reason_and_without_echoing_the_input() {
        assert_eq!(Cpf::parse("529.982.247-24"), Err(CpfError::CheckDigits));
        assert_eq!(Cpf::parse("1234"), Err(CpfError::Length(4)));
        assert_eq!(Cpf::parse("111.111.111-11"), Err(CpfError::Repeated));
        assert_eq!(Cpf::parse("529982247x5"), Err(CpfError::Character));
        assert!(!CpfError::CheckDigits.to_string().contains("529"));
    }

    #[test]
    fn debug_and_display_print_only_the_masked_form() {
        let cpf = Cpf::parse("52998224725").unwrap();
        assert_eq!(format!("{cpf}"), "***.982.247-**");
        assert_eq!(format!("{cpf:?}"), "Cpf(***.982.247-**)");
    }

    proptest::proptest! {
        /// Any text: no panic, and a CPF comes out exactly when the text is 11 digits (with
        /// any dots, dashes and spaces) whose check digits match and are not all alike.
        #[test]
        fn any_text_is_a_cpf_exactly_when_its_digits_are_one(input in "[0-9 .-]{0,20}|\\PC{0,20}") {
            let digits: Vec<u8> = input.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
            let only_allowed = input.chars().all(|c| c.is_ascii_digit() || ".- ".contains(c));
            let valid = only_allowed
                && digits.len() == 11
                && digits.iter().any(|&d| d != digits[0])
                && check_digit(&digits[..9]) == digits[9]
                && check_digit(&digits[..10]) == digits[10];
            match Cpf::parse(&input) {
                Ok(cpf) => {
                    proptest::prop_assert!(valid, "{:?} parsed", input);
                    let clear: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
                    proptest::prop_assert_eq!(cpf.digits(), clear.clone());
                    // The printed forms never hold the whole number.
                    let printed = format!("{cpf} {cpf:?}");
                    proptest::prop_assert!(!printed.contains(&clear));
                }
                Err(e) => {
                    proptest::prop_assert!(!valid, "{:?} refused: {}", input, e);
                    // The reason never repeats the number (its example, 123.456.789-09, may
                    // share a few digits with a short input).
                    if digits.len() >= 11 {
                        let clear: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
                        proptest::prop_assert!(!e.to_string().contains(&clear));
                    }
                }
            }
        }

        /// Every valid CPF parses however it is punctuated, to the same CPF.
        #[test]
        fn a_valid_cpf_parses_with_any_punctuation(base in 0u32..1_000_000_000, seps in proptest::collection::vec("[ .-]{0,2}", 11)) {
            let cpf = Cpf::from_base(base);
            let text: String = cpf.digits().chars().zip(&seps).map(|(d, s)| format!("{s}{d}")).collect();
            proptest::prop_assert_eq!(Cpf::parse(&text), Ok(cpf));
        }
    }

    #[test]
    fn every_base_gives_a_valid_cpf() {
        for base in [0, 1, 123_456_789, 999_999_999, 111_111_111] {
            let cpf = Cpf::from_base(base);
            assert_eq!(Cpf::parse(&cpf.digits()), Ok(cpf));
        }
    }
}
