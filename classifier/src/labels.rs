//! The 19 transaction labels (Plaid PFC codes) and the confidence levels of a prediction.

use std::fmt;
use std::str::FromStr;

macro_rules! labels {
    ($($variant:ident => $name:literal, $primary:literal;)*) => {
        /// One of the 19 categories of `docs/taxonomy.md`. The string form is the PFC code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Label { $($variant),* }

        impl Label {
            /// Every label, in the taxonomy's order.
            pub const ALL: &'static [Label] = &[$(Label::$variant),*];

            /// The PFC code, e.g. `FOOD_AND_DRINK_GROCERIES`.
            pub fn as_str(self) -> &'static str {
                match self { $(Label::$variant => $name),* }
            }

            /// The PFC primary category the label belongs to (its prefix).
            pub fn primary(self) -> &'static str {
                match self { $(Label::$variant => $primary),* }
            }
        }

        impl FromStr for Label {
            type Err = UnknownLabel;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.trim() {
                    $($name => Ok(Label::$variant),)*
                    other => Err(UnknownLabel(other.chars().take(64).collect())),
                }
            }
        }
    };
}

labels! {
    Income => "INCOME", "INCOME";
    TransferIn => "TRANSFER_IN", "TRANSFER_IN";
    TransferOut => "TRANSFER_OUT", "TRANSFER_OUT";
    TransferOutWithdrawal => "TRANSFER_OUT_WITHDRAWAL", "TRANSFER_OUT";
    LoanPayments => "LOAN_PAYMENTS", "LOAN_PAYMENTS";
    BankFees => "BANK_FEES", "BANK_FEES";
    Groceries => "FOOD_AND_DRINK_GROCERIES", "FOOD_AND_DRINK";
    FoodAndDrink => "FOOD_AND_DRINK", "FOOD_AND_DRINK";
    GeneralMerchandise => "GENERAL_MERCHANDISE", "GENERAL_MERCHANDISE";
    HomeImprovement => "HOME_IMPROVEMENT", "HOME_IMPROVEMENT";
    Medical => "MEDICAL", "MEDICAL";
    PersonalCare => "PERSONAL_CARE", "PERSONAL_CARE";
    GeneralServices => "GENERAL_SERVICES", "GENERAL_SERVICES";
    Government => "GOVERNMENT_AND_NON_PROFIT", "GOVERNMENT_AND_NON_PROFIT";
    Transportation => "TRANSPORTATION", "TRANSPORTATION";
    Travel => "TRAVEL", "TRAVEL";
    RentAndUtilities => "RENT_AND_UTILITIES", "RENT_AND_UTILITIES";
    Entertainment => "ENTERTAINMENT", "ENTERTAINMENT";
    Gambling => "ENTERTAINMENT_CASINOS_AND_GAMBLING", "ENTERTAINMENT";
}

impl Label {
    /// Position of the label in [`Label::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is none of the 19 labels.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown label `{0}` (expected one of the 19 PFC codes of taxonomy.md)")]
pub struct UnknownLabel(pub String);

/// How sure the model is of its top label, with Plaid's thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confidence {
    Low,
    Medium,
    High,
    VeryHigh,
}

impl Confidence {
    /// VERY_HIGH above 0.98, HIGH above 0.90, MEDIUM above 0.70, LOW otherwise.
    pub fn from_probability(p: f32) -> Self {
        if p > 0.98 {
            Confidence::VeryHigh
        } else if p > 0.90 {
            Confidence::High
        } else if p > 0.70 {
            Confidence::Medium
        } else {
            Confidence::Low
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::VeryHigh => "VERY_HIGH",
            Confidence::High => "HIGH",
            Confidence::Medium => "MEDIUM",
            Confidence::Low => "LOW",
        }
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_round_trips_through_its_code_and_has_its_prefix_as_primary() {
        assert_eq!(Label::ALL.len(), 19);
        for (i, label) in Label::ALL.iter().enumerate() {
            assert_eq!(label.index(), i);
            assert_eq!(label.as_str().parse::<Label>(), Ok(*label));
            assert!(label.as_str().starts_with(label.primary()));
        }
    }

    #[test]
    fn an_unknown_label_is_named_in_the_error() {
        let err = "GROCERIES".parse::<Label>().unwrap_err();
        assert!(err.to_string().contains("`GROCERIES`"));
    }

    #[test]
    fn confidence_levels_follow_plaids_thresholds() {
        assert_eq!(Confidence::from_probability(0.99), Confidence::VeryHigh);
        assert_eq!(Confidence::from_probability(0.98), Confidence::High);
        assert_eq!(Confidence::from_probability(0.91), Confidence::High);
        assert_eq!(Confidence::from_probability(0.90), Confidence::Medium);
        assert_eq!(Confidence::from_probability(0.71), Confidence::Medium);
        assert_eq!(Confidence::from_probability(0.70), Confidence::Low);
        assert_eq!(Confidence::from_probability(f32::NAN), Confidence::Low);
    }
}
